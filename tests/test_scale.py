"""Driver memory does not grow with the data: stage setup streams the feature Parquet."""

import json
import subprocess
import sys

import pytest

from rcmae.data.feature_table import write_synthetic_features

SETUP = """
import json, resource, sys
from rcmae.config import paper
from rcmae.data.classes import train_classes
from rcmae.train.setup import pretrain_start
pretrain_start(paper().augment, sys.argv[1])
train_classes(sys.argv[1], 'id')
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def setup_peak_rss_mib(folder) -> float:
    done = subprocess.run([sys.executable, "-c", SETUP, str(folder)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]


@pytest.mark.slow
def test_stage_setup_memory_is_flat_from_250_to_2000_paper_size_clips(tmp_path):
    small = setup_peak_rss_mib(write_synthetic_features(tmp_path / "small", 250))
    large = setup_peak_rss_mib(write_synthetic_features(tmp_path / "large", 2000))
    assert large - small < 300, (small, large)
