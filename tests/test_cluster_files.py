"""The shipped cluster files start what they promise, checked with Ray's own cluster-config validation."""

from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
LAUNCHERS = sorted(CLUSTER.glob("*.yaml"))


def image_tag_matches_ray(image: str) -> bool:
    name, _, tag = image.partition(":")
    return name == "rayproject/ray" and tag.startswith(f"{ray.__version__}-")


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_passes_ray_validation_and_starts_its_workers(path):
    raw = yaml.safe_load(path.read_text())
    validate_config(prepare_config(raw))
    head = " ".join(raw["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head  # the head's autoscaler starts workers
    assert "--dashboard-host=127.0.0.1" in head  # job submission is not open on the network
    assert any(target == "." for target in raw["file_mounts"].values())  # the checkout goes to every node
    assert any(str(mount) in " ".join(raw["setup_commands"]) for mount in raw["file_mounts"])


def test_gpu_launcher_pins_ray_autoscales_gpus_and_mounts_shared_storage():
    raw = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    assert image_tag_matches_ray(raw["docker"]["image"]) and raw["docker"]["image"].endswith("-gpu")
    gpu_types = [t for t in raw["available_node_types"].values() if t["resources"].get("GPU")]
    assert gpu_types and all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in gpu_types)
    assert "-v /mnt/shared:/mnt/shared" in raw["docker"]["run_options"]
    assert any("/mnt/shared" in command for command in raw["initialization_commands"])


def test_kuberay_manifest_has_the_required_fields():
    raw = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert raw["apiVersion"] == "ray.io/v1" and raw["kind"] == "RayCluster" and raw["metadata"]["name"]
    spec = raw["spec"]
    assert spec["rayVersion"] == ray.__version__ and spec["enableInTreeAutoscaling"] is True
    groups = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
    for group in groups:
        assert isinstance(group["rayStartParams"], dict)
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        assert container["name"] and container["image"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert any(m["mountPath"] == "/mnt/shared" and m["name"] in claims for m in container["volumeMounts"])
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert any(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
               for g in spec["workerGroupSpecs"])


def test_the_image_kuberay_runs_is_built_on_the_pinned_ray():
    base = next(line.split()[1] for line in (CLUSTER / "Dockerfile").read_text().splitlines()
                if line.startswith("FROM "))
    assert image_tag_matches_ray(base)
