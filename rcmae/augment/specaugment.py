"""Random time and frequency masking on log-mel: the paper's Table 3 "Baseline" augmentation, two ways.

- `masking` (the ablation's arm): fresh masks for every training batch, drawn from the batch's seeded generator
  and applied on the training device (`StepMasking.draw` in the batch maker, `masked_view` in the step); the
  pipeline writes log-mels only and needs no augmentation actors on GPUs.
- `specaugment`: masked variants written by the pipeline like any augmenter's (a quick stand-in for tests and
  drills), the same spans and the same fill.

Each span is (start, width) on its axis; a masked band or stretch holds the clip's mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rcmae.augment.base import Augmented
from rcmae.config_input import Section, check, doc_field

FREQ_SPANS, TIME_SPANS = "freq_spans", "time_spans"  # the batch keys of the per-step masks


@dataclass
class MaskOptions(Section):
    """The options of `masking` and `specaugment`."""

    section = "augment"
    time_masks: int = doc_field("Time masks per clip.", 2)
    freq_masks: int = doc_field("Frequency masks per clip.", 2)
    max_mask_fraction: float = doc_field("Widest mask as a share of the axis.", 0.15)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.time_masks >= 0 and self.freq_masks >= 0, "augment: time_masks and freq_masks must be >= 0")
        check(0 < self.max_mask_fraction < 1, "augment.max_mask_fraction must be in (0, 1)")


def draw_spans(rng: np.random.Generator, clips: int, size: int, count: int, max_fraction: float) -> np.ndarray:
    """(clips, count, 2) int64 (start, width) spans on an axis of `size`, widths 1 .. max_fraction * size."""
    widest = max(1, int(size * max_fraction))
    spans = np.zeros((clips, count, 2), dtype=np.int64)
    for clip in range(clips):
        for i in range(count):
            width = int(rng.integers(1, widest + 1))
            spans[clip, i] = int(rng.integers(0, size - width + 1)), width
    return spans


def _covered(spans: torch.Tensor, size: int) -> torch.Tensor:
    """(clips, size) bool: the positions any of each clip's spans covers."""
    position = torch.arange(size, device=spans.device)[None, None, :]
    start, width = spans[..., :1], spans[..., 1:]
    return ((position >= start) & (position < start + width)).any(dim=1)


def apply_masks(specs: torch.Tensor, freq_spans: torch.Tensor, time_spans: torch.Tensor) -> torch.Tensor:
    """`specs` (clips, n_mels, n_frames) with each clip's masked bands and stretches set to the clip's mean."""
    hidden = _covered(freq_spans, specs.shape[1])[:, :, None] | _covered(time_spans, specs.shape[2])[:, None, :]
    return torch.where(hidden, specs.mean(dim=(1, 2), keepdim=True), specs)


def masked_view(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The augmented view of a per-step batch: its originals under the masks drawn for it."""
    return apply_masks(batch["original"], batch[FREQ_SPANS], batch[TIME_SPANS])


class StepMasking:
    """The `masking` augmenter: masks drawn per training batch (registry entry `per_step`)."""

    name = "masking"

    def __init__(self, options: MaskOptions, sample_rate: int = 16000, device: str = "cpu"):
        self.options = options

    def draw(self, rng: np.random.Generator, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
        """Fresh spans for a batch of `shape` (clips, n_mels, n_frames)."""
        clips, n_mels, n_frames = shape
        cfg = self.options
        return {FREQ_SPANS: draw_spans(rng, clips, n_mels, cfg.freq_masks, cfg.max_mask_fraction),
                TIME_SPANS: draw_spans(rng, clips, n_frames, cfg.time_masks, cfg.max_mask_fraction)}


class SpecAugment:
    """The `specaugment` augmenter: one masked variant per clip and seed, written by the pipeline."""

    name = "specaugment"
    domain = "spec"

    def __init__(self, options: MaskOptions, sample_rate: int = 16000, device: str = "cpu"):
        self.masks = StepMasking(options)

    def augment(self, items: list[np.ndarray], seeds: list[int]) -> list[Augmented]:
        results = []
        for spec, seed in zip(items, seeds):
            spans = self.masks.draw(np.random.default_rng(seed), (1, *spec.shape))
            out = masked_view({"original": torch.from_numpy(spec[None]),
                               **{key: torch.from_numpy(value) for key, value in spans.items()}})
            results.append(Augmented(out[0].numpy(), dict(augmenter=self.name, seed=seed,
                                                         freq_masks=spans[FREQ_SPANS][0].tolist(),
                                                         time_masks=spans[TIME_SPANS][0].tolist())))
        return results
