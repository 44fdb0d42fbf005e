"""The Augmenter protocol shared by every augmentation, and per-clip seeds.

An augmenter turns a batch of items (mono waves for domain "wave", log-mel arrays for domain "spec")
into one augmented item each, with a provenance record saying exactly how it was made.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Augmented:
    data: np.ndarray
    provenance: dict = field(default_factory=dict)


class Augmenter(Protocol):
    name: str
    domain: str  # "wave" (before log-mel) or "spec" (after)

    def augment(self, items: list[np.ndarray], seeds: list[int]) -> list[Augmented | Exception]:
        """One result per item: its augmentation, or the exception that made that item fail."""
        ...


def clip_seed(base_seed: int, clip_key: str, variant: int) -> int:
    """A distinct, reproducible 31-bit seed per (run seed, clip, variant)."""
    return zlib.crc32(f"{base_seed}|{clip_key}|{variant}".encode()) & 0x7FFFFFFF

