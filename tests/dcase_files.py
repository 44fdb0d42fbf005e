"""Reading back the DCASE result files the tests check (the library only writes them)."""

import csv


def read_scores(path) -> dict[str, float]:
    with open(path, newline="") as handle:
        return {name: float(score) for name, score in csv.reader(handle)}
