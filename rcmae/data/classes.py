"""Stage 2's classes and each clip's class among them.

The paper classifies machine IDs (DCASE 2020: several per type). Since DCASE 2022 a machine type has few sections
(since 2023 one), so an ID head has one class per type and nothing to learn; the file names carry the machine's
operating attributes (`..._vel_8_loc_A`), and the field classifies those instead. A class is a machine key
(`type/ID`) or, by attributes, `type/ID/attributes` (a clip without attributes keeps its machine key).

A clip's class is read from the classes themselves, so a model folder needs no record of the choice: its attribute
class when the head has it, else its machine key when the head has that, else none (an evaluation clip whose name
carries no attributes, or an attribute value never trained on): `ClipClasses.true_log_probs` then takes the
probability of any class of its machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from rcmae.data.feature_table import machine_key, read_feature_table

ClassBy = Literal["id", "attributes"]
CLASS_COLUMNS = ["machine_type", "machine_id", "attributes"]


def attribute_class(machine_type: str, machine_id: str, attributes: str | None) -> str:
    """The attribute class of a clip: its machine key with its attribute string (the machine key without one)."""
    key = machine_key(machine_type, machine_id)
    return f"{key}/{attributes}" if attributes else key


def machine_of(class_key: str) -> str:
    """The machine key (`type/ID`) of a class."""
    return "/".join(class_key.split("/", 2)[:2])


def chosen_class_by(table: pa.Table, choice: Literal["id", "attributes", "auto"]) -> ClassBy:
    """`auto`: attributes when some machine type has fewer than two IDs with train clips and the train clips carry
    attributes (a 2022-2025 year), else IDs (the paper's classes)."""
    if choice != "auto":
        return choice
    ids_per_type: dict[str, set[str]] = {}
    for machine_type, machine_id in zip(table["machine_type"].to_pylist(), table["machine_id"].to_pylist()):
        ids_per_type.setdefault(machine_type, set()).add(machine_id)
    lone = any(len(ids) < 2 for ids in ids_per_type.values())
    return "attributes" if lone and any(table["attributes"].to_pylist()) else "id"


def train_classes(features_dir, choice: Literal["id", "attributes", "auto"]) -> tuple[ClassBy, list[str]]:
    """How the classes were chosen and the sorted classes of the usable train clips."""
    table = read_feature_table(features_dir, ("train",), columns=CLASS_COLUMNS)
    by = chosen_class_by(table, choice)
    return by, sorted(set(clip_class_keys(table, by)))


def clip_class_keys(table: pa.Table, by: ClassBy) -> list[str]:
    """Each train clip's class when classes are chosen `by`."""
    rows = zip(table["machine_type"].to_pylist(), table["machine_id"].to_pylist(), table["attributes"].to_pylist())
    if by == "id":
        return [machine_key(machine_type, machine_id) for machine_type, machine_id, _ in rows]
    return [attribute_class(*row) for row in rows]


def class_by_of(classes: list[str]) -> ClassBy:
    """How a head's classes were chosen, read from the classes."""
    return "attributes" if any(key.count("/") >= 2 for key in classes) else "id"


def machines_of(classes: list[str]) -> list[str]:
    """The machines (`type/ID`) a head's classes belong to, sorted."""
    return sorted({machine_of(key) for key in classes})


@dataclass(frozen=True)
class ClipClasses:
    """The head's classes and, per clip, its class among them (None: not among them, see the module's doc)."""

    classes: list[str]
    machines: list[str]  # each clip's machine key
    of_clips: list[str | None]

    @classmethod
    def of_table(cls, table: pa.Table, classes: list[str]) -> "ClipClasses":
        """The classes of the clips of a table with the clip-table columns."""
        known = set(classes)
        machines, of_clips = [], []
        for machine_type, machine_id, attributes in zip(table["machine_type"].to_pylist(),
                                                        table["machine_id"].to_pylist(),
                                                        table["attributes"].to_pylist()):
            key, by_attributes = machine_key(machine_type, machine_id), attribute_class(machine_type, machine_id,
                                                                                         attributes)
            machines.append(key)
            of_clips.append(by_attributes if by_attributes in known else key if key in known else None)
        return cls(list(classes), machines, of_clips)

    @classmethod
    def of_machines(cls, classes: list[str], machines: list[str]) -> "ClipClasses":
        """Clips known by their machine keys only (no attributes)."""
        return cls(list(classes), list(machines), [key if key in classes else None for key in machines])

    @classmethod
    def as_machine(cls, classes: list[str], key: str, count: int) -> "ClipClasses":
        """`count` clips, each taken as one of machine `key`'s (whatever its attributes)."""
        return cls.of_machines(classes, [key] * count)

    def select(self, rows: np.ndarray) -> "ClipClasses":
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        return ClipClasses(self.classes, [self.machines[i] for i in rows], [self.of_clips[i] for i in rows])

    def true_log_probs(self, log_probs: np.ndarray) -> np.ndarray:
        """log p(the clip's class | clip) from the head's (N, classes) log-probabilities; for a clip without a
        class, log p(any class of its machine | clip)."""
        index = {key: i for i, key in enumerate(self.classes)}
        of_machine: dict[str, list[int]] = {}
        for i, key in enumerate(self.classes):
            of_machine.setdefault(machine_of(key), []).append(i)
        values = np.empty(len(self.of_clips))
        for row, (clip_class, machine) in enumerate(zip(self.of_clips, self.machines)):
            if clip_class is not None:
                values[row] = log_probs[row, index[clip_class]]
            else:
                values[row] = np.logaddexp.reduce(log_probs[row, of_machine[machine]])
        return values
