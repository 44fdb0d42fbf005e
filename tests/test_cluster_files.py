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
    # token auth on every node, with the one token file shipped to all of them
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    assert all(c.startswith("RAY_AUTH_MODE=token ") for c in starts if " start " in f" {c} ")
    assert any(mount.endswith("/.ray/auth_token") and source == "~/.ray/auth_token"
               for mount, source in raw["file_mounts"].items())


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


def test_kuberay_clusters_use_token_auth_and_the_rayjob_runs_the_main_job_on_its_own_cluster():
    from ray.runtime_env import RuntimeEnv

    cluster = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert cluster["spec"]["authOptions"] == {"mode": "token"}
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["rayClusterSpec"] == cluster["spec"]  # the same cluster, created for the job
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    entry = spec["entrypoint"].split()
    assert entry[:2] == ["python", "/home/ray/rcmae/jobs/run.py"] and entry[entry.index("--out") + 1].startswith(
        "/mnt/shared/")
    runtime_env = RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))
    assert runtime_env["env_vars"]["HF_HOME"].startswith("/mnt/shared/")
    gpu = [g for g in spec["rayClusterSpec"]["workerGroupSpecs"]
           if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu and all(g["minReplicas"] == 0 for g in gpu)


def test_the_image_leaves_environments_runs_and_data_out():
    ignored = (CLUSTER.parent / ".dockerignore").read_text().split()
    assert {".venv/", "runs/", "data/", ".git/", "**/__pycache__/"} <= set(ignored)


def test_the_job_runtime_envs_are_valid_and_pin_what_pyproject_pins():
    import tomllib

    from ray.runtime_env import RuntimeEnv

    plain = RuntimeEnv(**yaml.safe_load((CLUSTER / "runtime_env" / "installed.yaml").read_text()))
    with_pip = RuntimeEnv(**yaml.safe_load((CLUSTER / "runtime_env" / "pip.yaml").read_text()))
    assert plain["env_vars"]["HF_HOME"] == with_pip["env_vars"]["HF_HOME"]
    pinned = tomllib.loads((CLUSTER.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    assert with_pip["pip"]["packages"] == [d for d in pinned if not d.startswith("ray[")]
    assert with_pip["env_vars"]["PYTHONPATH"] == "."


def test_the_rayservice_runs_rcmae_serves_application_with_its_token_from_a_secret(finetuned_model, tmp_path):
    from ray.serve.schema import ServeDeploySchema

    from rcmae.serve.app import ServiceArgs

    service = yaml.safe_load((CLUSTER / "kuberay" / "rayservice.yaml").read_text())
    cluster = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService" and service["metadata"]["name"]
    spec = service["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray.__version__ and spec["authOptions"] == cluster["spec"]["authOptions"]
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    (application,) = serve_config.applications
    assert application.import_path == "rcmae.serve.app:build"
    args = ServiceArgs.model_validate(application.args)  # what Serve checks before `build` runs
    assert args.checkpoint.startswith("/mnt/shared/") and args.token_file
    images = set()
    for group in [spec["headGroupSpec"]] + spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        images.add(container["image"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        token_dir = str(Path(args.token_file).parent)
        assert volumes[mounts[token_dir]]["secret"]["secretName"]  # the token from a Secret, on every node
        assert volumes[mounts["/mnt/shared"]]["persistentVolumeClaim"]["claimName"] == "rcmae-shared"
    assert images == {cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]}
    # the application it names builds from these arguments (here: a local model and token in their place)
    token = tmp_path / "token"
    token.write_text("a-token-of-some-length-0123456789")
    local = ServiceArgs.model_validate(dict(application.args, checkpoint=str(finetuned_model),
                                            token_file=str(token)))
    assert local.settings().token_file == str(token)
