"""Build a random AudioLDM offline and save it in the diffusers folder layout.

    python -m rcmae.augment.tiny --out DIR                 # tiny: for tests and smoke runs
    python -m rcmae.augment.tiny --size full --out DIR     # cvssp/audioldm-s-full-v2's architecture and sizes

Its weights are random: the audio it makes is noise-like. `tiny` exists so tests, and anyone smoke-testing a
cluster without hub access, run the real loading and SDEdit code on the same path as real weights; `full` has the
published model's parts at their published sizes (about 421 M parameters), so speed and memory can be measured on
the real architecture without the hub (`benchmarks/gpu.py`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rcmae.augment.prompts import EXTENDED


def build_tokenizer(vocab_size: int = 400):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator([p.text for p in EXTENDED], vocab_size=vocab_size, min_frequency=1,
                            special_tokens=special)
    return RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=77)


SIZES = ("tiny", "full")


def build_components(seed: int = 0, size: str = "tiny"):
    """The six parts AudioLDM's pipeline loads, with random weights: tiny ones, or (`size="full"`) those of
    cvssp/audioldm-s-full-v2."""
    if size not in SIZES:
        raise ValueError(f"unknown AudioLDM size {size!r}; choose from {SIZES}")
    return full_components(seed) if size == "full" else tiny_components(seed)


def ddim_scheduler(beta_start: float, beta_end: float):
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=beta_start, beta_end=beta_end, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False)


def full_components(seed: int = 0):
    """audioldm-s-full-v2's configs (diffusers' conversion of the original checkpoint): a UNet of channels
    128-256-384-640, 2 blocks per level, an 8-channel latent, the text embedding as a concatenated class
    embedding; an 8-channel-latent VAE of 128-256-512; CLAP's RoBERTa-base text branch; a HiFi-GAN of 1024 initial
    channels upsampling 5x4x2x2x2 = 160 (the mel hop)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    from rcmae.augment.audioldm import Components

    torch.manual_seed(seed)
    blocks = (128, 256, 384, 640)
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=8, out_channels=8, block_out_channels=blocks, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, cross_attention_dim=blocks, class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=512, class_embeddings_concat=True, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=2, norm_num_groups=32, sample_size=512, scaling_factor=0.9227914214134216)
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=50265, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        projection_dim=512, max_position_embeddings=514, type_vocab_size=1, bos_token_id=0, pad_token_id=1,
        eos_token_id=2, projection_hidden_act="relu"))
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, normalize_before=False))
    return Components(vae=vae, text_encoder=text_encoder, tokenizer=build_tokenizer(), unet=unet,
                      scheduler=ddim_scheduler(0.0015, 0.0195), vocoder=vocoder)


def tiny_components(seed: int = 0):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    from rcmae.augment.audioldm import Components

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, projection_dim=32, bos_token_id=0, pad_token_id=1, eos_token_id=2,
        max_position_embeddings=80))
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(32, 64), class_embed_type="simple_projection", projection_class_embeddings_input_dim=32,
        class_embeddings_concat=True, norm_num_groups=8)
    # three VAE blocks downsample the mel 4x, as AudioLDM's: the UNet's attention then sees few tokens
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(16, 32, 32),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=8)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[10, 4, 4],
        upsample_kernel_sizes=[20, 8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False))
    return Components(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                      scheduler=ddim_scheduler(0.00085, 0.012), vocoder=vocoder)


def save_tiny(out: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    out = Path(out)
    parts = build_components(seed, size)
    for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "vocoder"):
        getattr(parts, name).save_pretrained(out / name)
    (out / "README.txt").write_text(f"Random AudioLDM ({size}; rcmae.augment.tiny): random weights, for tests, smoke "
                                    f"runs and speed measurements only.\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=SIZES, default="tiny",
                        help="tiny, or full: audioldm-s-full-v2's architecture (about 1.7 GB in fp32)")
    args = parser.parse_args()
    print(f"wrote a random {args.size} AudioLDM to {save_tiny(args.out, args.seed, args.size)}")


if __name__ == "__main__":
    main()
