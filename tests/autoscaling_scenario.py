"""Run by tests/test_autoscaling.py in its own process (Ray's fake multi-node provider runs `ray stop --force`):
a CPU-only head and a `{CPU: 2, GPU: 1}` node type from 0 to 3 nodes. Prints one JSON line of what happened."""

import json
import sys
from pathlib import Path

import numpy as np
import ray
import soundfile as sf
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
from ray.cluster_utils import AutoscalingCluster

from rcmae.augment.tiny import save_tiny
from rcmae.config import tiny
from rcmae.distributed.augment_pipeline import run_augment
from rcmae.distributed.runtime import ResourceError


class FakeGPUCluster(AutoscalingCluster):
    """The config Ray's example.yaml would give (that file is not in the wheel), built here."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        provider = dict(type="fake_multinode", use_node_id_as_ip=True, disable_node_updaters=True,
                        disable_launch_config_check=True)
        if autoscaler_v2:
            provider.update(launch_multiple=True, head_node_id=FAKE_HEAD_NODE_ID)
        return dict(
            cluster_name="fake_multinode", max_workers=4, idle_timeout_minutes=1, upscaling_speed=1.0,
            provider=provider,
            auth={}, docker={}, head_node_type="ray.head.default",
            available_node_types={**worker_node_types, "ray.head.default": dict(
                resources=dict(head_resources), node_config={}, max_workers=0)},
            file_mounts={}, cluster_synced_files=[], file_mounts_sync_continuously=False, rsync_exclude=[],
            rsync_filter=[], initialization_commands=[], setup_commands=[], head_setup_commands=[],
            worker_setup_commands=[], head_start_ray_commands=[], worker_start_ray_commands=[], **config_kwargs)


def toy_clips(root: Path, count: int = 8) -> Path:
    folder = root / "dev_data" / "fan" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        sf.write(folder / f"normal_id_{i % 2:02d}_{i:08d}.wav", 0.1 * rng.standard_normal(8000).astype(np.float32),
                 16000)
    return root


def main(work: Path) -> None:
    cluster = FakeGPUCluster(head_resources={"CPU": 2},
                             worker_node_types={"gpu_node": dict(resources={"CPU": 2, "GPU": 1}, node_config={},
                                                                 min_workers=0, max_workers=3)})
    cluster.start()
    try:
        ray.init("auto", logging_level="error")
        ray.data.DataContext.get_current().enable_progress_bars = False
        gpus_at_start = ray.cluster_resources().get("GPU", 0)
        data = toy_clips(work / "data")
        base = tiny().override({"augment.augmenter": "specaugment", "augment.variants": 1, "augment.batch_size": 4,
                                "augment.use_gpu": True, "augment.num_actors": 1, "audio.clip_seconds": 0.5,
                                "features.n_frames": 16})
        # an elastic pool first, on no GPU node: it waits for one actor, then grows to 3 as the autoscaler adds
        # nodes (a slow augmenter, the tiny AudioLDM, keeps it busy long enough)
        elastic = base.override({"augment.augmenter": "audioldm", "augment.model": str(save_tiny(work / "tiny")),
                                 "augment.num_actors": 3, "augment.batch_size": 1, "augment.steps_min": 10,
                                 "augment.steps_max": 12})
        gpus_before_growth = ray.cluster_resources().get("GPU", 0)
        grown = run_augment(toy_clips(work / "many", 96), work / "grown", elastic)
        gpus_after_growth = ray.cluster_resources().get("GPU", 0)
        grown_records = [p for cell in ray.data.read_parquet(str(work / "grown" / "features")).to_pandas()[
            "provenance"] for p in json.loads(cell)]
        try:
            run_augment(data, work / "never", base.override({"augment.gpus_per_actor": 2}))
            never = "no error"
        except ResourceError as error:
            never = str(error)
        summary = run_augment(data, work / "gpu", base)
        table = ray.data.read_parquet(str(work / "gpu" / "features")).to_pandas()
        records = [p for cell in table["provenance"] for p in json.loads(cell)]
        gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}
        print(json.dumps(dict(gpus_at_start=gpus_at_start, never=never, clips=summary["clips"],
                              actor_nodes_with_gpu=all(r["node"] in gpu_nodes for r in records),
                              devices=sorted({r["device"] for r in records}), gpu_nodes=len(gpu_nodes),
                              gpus_before_growth=gpus_before_growth, gpus_after_growth=gpus_after_growth,
                              grown_clips=grown["clips"],
                              grown_actors=grown["actors"], grown_nodes=len({r["node"] for r in grown_records}))))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
