"""SDEdit-style diffusion augmentation on AudioLDM's components (paper Eq. 1, Table 2).

Per clip: S DDIM steps drawn from [steps_min, steps_max], a fresh seed, a random factory prompt. The
clip's AudioLDM mel (16 kHz, 64 mels, n_fft 1024, hop 160, 0-8000 Hz, log of clamped magnitude) is
encoded by the VAE; its latent x0 is noised to the DDIM step k = floor(S * t0), i.e.
x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps, and denoised over the last k steps with classifier-free
guidance on the CLAP text embedding (which conditions the UNet through `class_labels`). The VAE decodes,
HiFi-GAN vocodes, and the result is cropped back to the clip's length at its original loudness.

As AudioLDM's own audio-to-audio path (`audioldm.pipeline.style_transfer` with `audio.tools.normalize_wav`,
github.com/haoheliu/AudioLDM): the waveform enters with its mean removed and its peak scaled to 0.5 (quiet
machines would otherwise reach the VAE far below its training range), latents beyond +-100 are clipped to
+-10, and the DDIM steps use `augment.eta` (AudioLDM's transfer uses eta = 1.0; the `paper` preset does).
Generated audio that is not finite (fp16 on a GPU can overflow) is an error for that clip, never a feature.

`diffusers.AudioLDMPipeline` is text-to-audio only (and deprecated), so the loop is built here from its
components: a hub id such as `cvssp/audioldm-s-full-v2` or a local diffusers-format folder with the
subfolders vae/, text_encoder/, tokenizer/, unet/, scheduler/, vocoder/.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from rcmae.augment.base import Augmented
from rcmae.augment.prompts import Prompt, PromptOptions, load_prompts, pick
from rcmae.config_input import check, doc_field
from rcmae.data.audio import resample, rms
from rcmae.errors import RcmaeError

MEL = dict(sample_rate=16000, n_fft=1024, hop_length=160, n_mels=64, f_min=0.0, f_max=8000.0)
WINDOW_SECONDS = 10.24  # AudioLDM's training clip length


@dataclass
class Components:
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    unet: torch.nn.Module
    scheduler: object
    vocoder: torch.nn.Module


@dataclass(frozen=True)
class ClipPlan:
    """What one clip's augmentation draws from its seed: the DDIM step count S and the prompt."""

    steps: int
    prompt: Prompt
    seed: int


PAPER_AUDIOLDM = "cvssp/audioldm-s-full-v2"  # the paper's AudioLDM checkpoint (diffusers layout)


@dataclass
class AudioLDMOptions(PromptOptions):
    model: str | None = doc_field("AudioLDM hub id or local diffusers folder.", None)
    t0: float = doc_field("SDEdit insertion point: the real clip enters at DDIM step floor(S*t0) (Eq. 1).", 0.5)
    guidance_scale: float = doc_field("Classifier-free guidance (paper Table 2).", 2.5)
    steps_min: int = doc_field("Fewest DDIM steps S drawn per clip (paper: 10).", 10)
    steps_max: int = doc_field("Most DDIM steps S drawn per clip (paper: 50).", 50)
    eta: float = doc_field("DDIM eta of the denoising steps (0: deterministic DDIM; AudioLDM's audio-to-audio "
                           "transfer uses 1.0).", 0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 < self.t0 <= 1.0, f"augment.t0 must be in (0, 1], got {self.t0}")
        check(1 <= self.steps_min <= self.steps_max,
              f"augment: need 1 <= steps_min <= steps_max, got {self.steps_min}, {self.steps_max}")
        check(0.0 <= self.eta <= 1.0, f"augment.eta must be in [0, 1], got {self.eta}")

    @classmethod
    def paper(cls) -> "AudioLDMOptions":
        """The paper's: its checkpoint, Table 1's prompts, eta as AudioLDM's audio-to-audio transfer."""
        return cls(model=PAPER_AUDIOLDM, prompts="paper", eta=1.0)


class WeightsUnavailable(RcmaeError):
    """AudioLDM's weights cannot be loaded here (none given, not a diffusers folder, no hub access)."""


SUBFOLDERS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "vocoder")


def require_model(source: str | None) -> None:
    """Stop before any work starts when AudioLDM's weights cannot be had, saying how to get them: a local
    folder must hold the diffusers layout; a hub id must be cached or reachable."""
    fix = (f"on a machine with hub access, `huggingface-cli download {source or PAPER_AUDIOLDM} --local-dir DIR` "
           f"and copy DIR here, then pass --model DIR (or --set augment.model=DIR); or choose a weight-free "
           f"augmenter (--augmenter factory-mix or specaugment)")
    if not source:
        raise WeightsUnavailable(f"augmenter 'audioldm' needs a model (a hub id or a diffusers folder): {fix}")
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        missing = [name for name in SUBFOLDERS if not (path / name).is_dir()]
        if missing:
            raise WeightsUnavailable(f"{path}: not an AudioLDM diffusers folder (missing {', '.join(missing)}): {fix}")
        return
    from huggingface_hub import hf_hub_download

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings: the error below says what they would
    try:
        try:
            hf_hub_download(source, "model_index.json", local_files_only=True)  # cached: no network needed
        except Exception:
            hf_hub_download(source, "model_index.json")
    except Exception as error:
        raise WeightsUnavailable(f"AudioLDM weights {source!r} cannot be loaded from this machine "
                                 f"({type(error).__name__}): {fix}") from None
    finally:
        hub_log.setLevel(level)


def load_components(source: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Components:
    """Load AudioLDM's parts from a hub id or a local diffusers-format folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, ClapTextModelWithProjection, SpeechT5HifiGan

    dtype = dtype or (torch.float16 if torch.device(device).type == "cuda" else torch.float32)
    try:
        parts = Components(
            vae=AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype),
            text_encoder=ClapTextModelWithProjection.from_pretrained(source, subfolder="text_encoder",
                                                                     torch_dtype=dtype),
            tokenizer=AutoTokenizer.from_pretrained(source, subfolder="tokenizer"),
            unet=UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype),
            scheduler=DDIMScheduler.from_pretrained(source, subfolder="scheduler"),
            vocoder=SpeechT5HifiGan.from_pretrained(source, subfolder="vocoder", torch_dtype=dtype),
        )
    except (OSError, ValueError) as error:
        raise WeightsUnavailable(f"cannot load AudioLDM from {source!r}: {error}. Pass a local diffusers-format folder "
                      f"(vae/, text_encoder/, tokenizer/, unet/, scheduler/, vocoder/) or a hub id reachable "
                      f"from this machine; `python -m rcmae.augment.tiny --out DIR` builds a tiny one.") from None
    return on_device(parts, device, dtype)


def on_device(parts: Components, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Components:
    """`parts` in inference mode on `device`, in `dtype` (default: fp16 on CUDA, fp32 elsewhere)."""
    dtype = dtype or (torch.float16 if torch.device(device).type == "cuda" else torch.float32)
    for module in (parts.vae, parts.text_encoder, parts.unet, parts.vocoder):
        module.to(device, dtype).eval().requires_grad_(False)
    return parts


def audioldm_normalized(wave: np.ndarray) -> np.ndarray:
    """AudioLDM's input normalisation: mean removed, peak at 0.5."""
    centred = wave - wave.mean()
    return (0.5 * centred / (np.abs(centred).max() + 1e-8)).astype(np.float32)


def window_seed(clip_seed: int, window: int) -> int:
    return int(np.random.SeedSequence([clip_seed, window]).generate_state(1)[0])


def ddim_start(num_steps: int, t0: float) -> int:
    """k = floor(S * t0), at least one step: how many of the S steps are denoised."""
    return max(1, min(num_steps, math.floor(num_steps * t0)))


class AudioLDMAugmenter:
    name = "audioldm"
    domain = "wave"

    def __init__(self, options: AudioLDMOptions, sample_rate: int = 16000, device: str | None = None,
                 components: Components | None = None):
        if components is None and not options.model:
            raise WeightsUnavailable("augmenter 'audioldm' needs a model: --model HUB_ID_OR_FOLDER")
        self.options, self.sample_rate = options, sample_rate
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.parts = components or load_components(options.model, self.device)
        self.dtype = self.parts.unet.dtype
        self.prompts = load_prompts(options.prompts)
        self.mel = torchaudio.transforms.MelSpectrogram(
            **MEL, power=1.0, norm="slaney", mel_scale="slaney", center=True).to(self.device)
        self.latent_scale = 2 ** (len(self.parts.vae.config.block_out_channels) - 1)
        unet_scale = 2 ** (len(self.parts.unet.config.block_out_channels) - 1)
        self.frame_multiple = self.latent_scale * unet_scale  # mel frames per whole latent cell of the UNet
        self.window_frames = self.frame_multiple * math.ceil(WINDOW_SECONDS * 100 / self.frame_multiple)
        hop = int(np.prod(self.parts.vocoder.config.upsample_rates))
        if hop != MEL["hop_length"]:
            raise WeightsUnavailable(f"{options.model}: vocoder upsample rates multiply to {hop}, not the mel hop "
                                     f"{MEL['hop_length']}")

    # ------------------------------------------------------------ steps
    def mel_of(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 1, frames, 64) log mel, the VAE's input layout."""
        spec = torch.log(torch.clamp(self.mel(waves.float()), min=1e-5))
        return spec.transpose(1, 2)[:, None]

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.parts.tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt",
                                      max_length=min(self.parts.tokenizer.model_max_length, 512))
        embeds = self.parts.text_encoder(tokens.input_ids.to(self.device),
                                         attention_mask=tokens.attention_mask.to(self.device)).text_embeds
        return F.normalize(embeds, dim=-1)

    @torch.no_grad()
    def encode_audio(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mel = self.mel_of(windows).to(self.dtype)
        latent = self.parts.vae.encode(mel).latent_dist.sample(generator=generator)
        return latent * self.parts.vae.config.scaling_factor

    def noised_start(self, x0: torch.Tensor, noise: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1: the latent at DDIM step floor(S * t0) and the timesteps that remain to denoise."""
        self.parts.scheduler.set_timesteps(num_steps, device=self.device)
        timesteps = self.parts.scheduler.timesteps
        remaining = timesteps[num_steps - ddim_start(num_steps, self.options.t0):]
        return self.parts.scheduler.add_noise(x0, noise, remaining[:1].repeat(len(x0))), remaining

    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor,
                uncond: torch.Tensor, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        class_labels = torch.cat([uncond, cond])
        for t in timesteps:
            model_in = self.parts.scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise_pred = self.parts.unet(model_in, t, encoder_hidden_states=None, class_labels=class_labels).sample
            uncond_pred, cond_pred = noise_pred.chunk(2)
            guided = uncond_pred + self.options.guidance_scale * (cond_pred - uncond_pred)
            latents = self.parts.scheduler.step(guided, t, latents, eta=self.options.eta,
                                                generator=generators).prev_sample
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        mel = self.parts.vae.decode(latents / self.parts.vae.config.scaling_factor).sample
        return self.parts.vocoder(mel.squeeze(1)).float()

    # ------------------------------------------------------------ windows and batches
    def windows(self, wave: np.ndarray) -> tuple[np.ndarray, int]:
        """Split a 16 kHz wave into AudioLDM windows (the last one zero-padded to whole latent cells)."""
        hop, frames = MEL["hop_length"], self.window_frames
        step = frames * hop
        count = max(1, math.ceil(len(wave) / step))
        if count == 1:  # short clip: one window just long enough for it
            cells = math.ceil(len(wave) / hop / self.frame_multiple) * self.frame_multiple
            step = cells * hop
        padded = np.zeros(count * step, dtype=np.float32)
        padded[:len(wave)] = wave
        return padded.reshape(count, step), len(wave)

    def _plan(self, seeds: list[int]) -> list[ClipPlan]:
        plans = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            plans.append(ClipPlan(steps=int(rng.integers(self.options.steps_min, self.options.steps_max + 1)),
                                  prompt=pick(self.prompts, rng), seed=seed))
        return plans

    def augment(self, items: list[np.ndarray], seeds: list[int]) -> list[Augmented | Exception]:
        """Clips sharing a step count S and a window length run as one batch through the UNet."""
        plans = self._plan(seeds)
        waves16 = [resample(w, self.sample_rate, MEL["sample_rate"]) for w in items]
        prepared = [self.windows(audioldm_normalized(w)) for w in waves16]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (windows, _) in enumerate(prepared):
            groups[(plans[i].steps, windows.shape[1])].append(i)
        outputs: list[np.ndarray | None] = [None] * len(items)
        for (steps, _), members in groups.items():
            generated = self._run_group(steps, [prepared[i][0] for i in members], [plans[i] for i in members])
            for i, audio in zip(members, generated):
                outputs[i] = audio
        results: list[Augmented | Exception] = []
        for i, (wave, plan) in enumerate(zip(items, plans)):
            audio = outputs[i].reshape(-1)[:prepared[i][1]]
            if not np.isfinite(audio).all():
                results.append(FloatingPointError(f"AudioLDM generated non-finite audio (S={plan.steps}, "
                                                  f"seed {plan.seed}); try fp32 or another seed"))
                continue
            audio = resample(audio, MEL["sample_rate"], self.sample_rate)[:len(wave)]
            audio = audio * (rms(wave) / rms(audio))
            results.append(Augmented(audio.astype(np.float32), dict(
                augmenter=self.name, model=str(self.options.model or "in-memory"), prompt=plan.prompt.text,
                family=plan.prompt.family, steps=plan.steps, seed=plan.seed, t0=self.options.t0,
                start_step=ddim_start(plan.steps, self.options.t0), guidance_scale=self.options.guidance_scale,
                eta=self.options.eta)))
        return results

    def _run_group(self, steps: int, clip_windows: list[np.ndarray], plans: list[ClipPlan]) -> list[np.ndarray]:
        counts = [len(w) for w in clip_windows]
        windows = torch.from_numpy(np.concatenate(clip_windows)).to(self.device)
        owners = [p for p, c in zip(plans, counts) for _ in range(c)]
        # One generator per (clip seed, window): a clip's noise never depends on the clips batched with it.
        generators = [torch.Generator("cpu").manual_seed(window_seed(p.seed, w))
                      for p, c in zip(plans, counts) for w in range(c)]
        x0 = torch.cat([self.encode_audio(windows[j:j + 1], generators[j]) for j in range(len(owners))])
        if x0.abs().max() > 1e2:  # as AudioLDM's transfer: an exploded VAE latent is clipped
            x0 = x0.clamp(-10, 10)
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in generators]).to(self.device, x0.dtype)
        latents, remaining = self.noised_start(x0, noise, steps)
        cond = self.encode_text([p.prompt.text for p in owners]).to(self.dtype)
        uncond = self.encode_text([""] * len(owners)).to(self.dtype)
        audio = self.decode(self.denoise(latents, remaining, cond, uncond, generators)).cpu().numpy()
        audio = audio[:, :windows.shape[1]]
        splits = np.cumsum(counts)[:-1]
        return [part.reshape(-1) for part in np.split(audio, splits)]
