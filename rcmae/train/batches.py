"""The one batch maker of both training paths: the in-process runner feeds it Parquet row groups, a Ray
Train worker its dataset shard's blocks, and both get the same batches from the same rows.

An epoch's rows arrive in pieces (files or blocks, in a new random order every epoch). A seeded shuffle
buffer mixes them (the pipeline already writes clips in a random order, so every piece mixes machine IDs),
batches are full but the epoch's last (every DDP worker takes the same number of steps), and `collate` turns the
rows into the stage's tensors: stage 1 pairs each clip with one of its variants, drawn afresh each epoch;
stage 2 labels each clip with its machine-ID class (`rcmae.train.stage`). Each batch also names its clips
(`PATHS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from rcmae.config import Config
from rcmae.features import Normalizer
from rcmae.train.stage import Stage


def shuffled(pieces: Iterable[pa.Table], batch_size: int, buffer_rows: int,
             rng: np.random.Generator) -> Iterator[pa.Table]:
    """Batches of `batch_size` rows drawn from a buffer of at least `buffer_rows` rows; the epoch's last batch
    holds what is left when that is 2 rows or more (the contrastive and covariance terms need two). Ray Train
    splits the rows equally, so every DDP worker takes the same number of steps."""
    buffer: list[pa.Table] = []
    held = 0

    def drain(keep: int, last: bool = False) -> Iterator[pa.Table]:
        nonlocal buffer, held
        pool = pa.concat_tables(buffer)
        pool = pool.take(pa.array(rng.permutation(pool.num_rows)))
        cut = ((pool.num_rows - keep) // batch_size) * batch_size
        if last and pool.num_rows - cut >= 2:
            cut = pool.num_rows
        for start in range(0, cut, batch_size):
            yield pool.slice(start, batch_size)
        buffer, held = [pool.slice(cut)], pool.num_rows - cut

    for piece in pieces:
        buffer.append(piece)
        held += piece.num_rows
        if held >= buffer_rows + batch_size:
            yield from drain(keep=buffer_rows // 2)
    if held >= 2:
        yield from drain(keep=0, last=True)


@dataclass
class BatchMaker:
    stage: Stage
    config: Config
    normalizer: Normalizer
    classes: list[str]
    batch_size: int

    @property
    def buffer_rows(self) -> int:
        return self.config.scale.shuffle_buffer_batches * self.batch_size

    def __call__(self, pieces: Iterable[pa.Table], rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
        for rows in shuffled(pieces, self.batch_size, self.buffer_rows, rng):
            yield self.collate(rows, rng)

    def collate(self, rows: pa.Table, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.stage.collate(rows, rng, self.config, self.normalizer, self.classes)


def epoch_rng(seed: int, epoch: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, rank])
