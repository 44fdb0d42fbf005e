"""Joining Ray: the cluster named by RAY_ADDRESS (as `ray job submit` sets it), else a local instance."""

from __future__ import annotations

import os


def ensure_ray(num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=True, logging_level="warning")
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = os.environ.get("RCMAE_PROGRESS", "1") == "1"
