"""Build a tiny random AudioLDM offline and save it in the diffusers folder layout.

    python -m rcmae.augment.tiny --out DIR

Its weights are random: the audio it makes is noise-like. It exists so tests, and anyone smoke-testing a
cluster without hub access, run the real loading and SDEdit code on the same path as real weights.
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


def build_components(seed: int = 0):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
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
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    return Components(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                      vocoder=vocoder)


def save_tiny(out: str | Path, seed: int = 0) -> Path:
    out = Path(out)
    parts = build_components(seed)
    for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "vocoder"):
        getattr(parts, name).save_pretrained(out / name)
    (out / "README.txt").write_text("Tiny random AudioLDM (rcmae.augment.tiny): for tests and smoke runs only.\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote tiny AudioLDM to {save_tiny(args.out, args.seed)}")


if __name__ == "__main__":
    main()
