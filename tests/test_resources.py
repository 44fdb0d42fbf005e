"""Resource plans: `auto` sizes from the cluster as it is, explicit settings are requested as given (so an
autoscaler can add nodes for them), and a request no node type can hold is refused at once."""

import pytest

from rcmae.config import paper, tiny
from rcmae.distributed.runtime import (
    PoolPlan,
    ResourceError,
    ResourcePlan,
    pool_plan,
    require_feasible,
    require_group_feasible,
    scaling_plan,
)
from rcmae.sections import AugmentConfig, ScaleConfig


def test_auto_training_plan_follows_the_cluster_now():
    plan = scaling_plan(ScaleConfig(), {"CPU": 2.0})
    assert plan == ResourcePlan(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 0.5})
    assert plan.backend == "gloo"
    gpu = scaling_plan(ScaleConfig(), {"CPU": 16.0, "GPU": 4.0})
    assert gpu.num_workers == 4 and gpu.use_gpu and gpu.backend == "nccl"


def test_explicit_gpu_training_is_requested_from_a_cluster_without_gpus():
    plan = scaling_plan(ScaleConfig(use_gpu=True, num_workers=8), {"CPU": 4.0})
    assert plan == ResourcePlan(num_workers=8, use_gpu=True, resources_per_worker={"CPU": 0.5, "GPU": 1})
    assert scaling_plan(ScaleConfig(use_gpu=True), {"CPU": 4.0}).num_workers == 1


def test_augmentation_pool_plan():
    assert pool_plan(AugmentConfig(), {"CPU": 4.0}) == PoolPlan(min_size=4, max_size=4, num_gpus=0, num_cpus=0.5)
    # auto: GPUs only for the diffusion augmenter, only when the cluster has them now
    assert pool_plan(AugmentConfig(augmenter="audioldm"), {"CPU": 8.0, "GPU": 2.0}).num_gpus == 1
    assert pool_plan(AugmentConfig(), {"CPU": 8.0, "GPU": 2.0}).num_gpus == 0
    # explicit: requested as given on a CPU-only cluster (an autoscaler adds the GPU nodes)
    explicit = pool_plan(AugmentConfig(use_gpu=True, num_actors=4, gpus_per_actor=0.5), {"CPU": 2.0})
    assert explicit == PoolPlan(min_size=1, max_size=4, num_gpus=0.5, num_cpus=1)  # grows as GPU nodes arrive
    # the ablation's masking arm under the paper preset: log-mels only, so no GPU actors however use_gpu is set
    masking = paper().override({"augment.augmenter": "masking"}).augment
    assert masking.use_gpu is True and pool_plan(masking, {"CPU": 8.0, "GPU": 2.0}).num_gpus == 0


def test_paper_preset_asks_for_gpus_and_tiny_does_not():
    assert paper().scale.use_gpu is True and paper().augment.use_gpu is True
    assert tiny().scale.use_gpu is None and tiny().augment.use_gpu is None


def test_a_request_no_node_type_offers_is_refused_with_the_fix():
    cpu_head, gpu_type = {"CPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}
    require_feasible("training", {"CPU": 0.5, "GPU": 1}, [cpu_head, gpu_type])
    require_feasible("augmentation", {"CPU": 0.5, "GPU": 0}, [cpu_head])
    with pytest.raises(ResourceError, match=r"no node .* offers that.*scale.use_gpu=false"):
        require_feasible("training", {"CPU": 0.5, "GPU": 1}, [cpu_head])
    with pytest.raises(ResourceError, match="GPU': 2"):
        require_feasible("augmentation", {"CPU": 1, "GPU": 2}, [cpu_head, gpu_type])


@pytest.mark.ray
def test_on_a_cluster_without_autoscaler_a_gpu_request_fails_at_once(ray_session):
    from rcmae.distributed.runtime import node_capacities

    assert node_capacities() is not None  # the local head's monitor has no autoscaling config: nodes are all
    with pytest.raises(ResourceError, match="no node of this cluster"):
        require_feasible("training", {"CPU": 0.5, "GPU": 1})
    require_feasible("training", {"CPU": 0.5})


def test_gpu_pools_start_with_what_is_there_and_grow_to_what_was_asked_or_can_be_reached():
    audioldm = AugmentConfig(augmenter="audioldm")
    # auto on a fixed cluster: one actor per GPU present
    assert pool_plan(audioldm, {"CPU": 8.0, "GPU": 2.0}, reachable_gpus=2) == PoolPlan(2, 2, 1, 1)
    # auto on an autoscaling cluster with 1 GPU now and 6 reachable: from 1 up to 6
    assert pool_plan(audioldm, {"CPU": 8.0, "GPU": 1.0}, reachable_gpus=6) == PoolPlan(1, 6, 1, 1)
    # asked for 3 with half a GPU each, 1 GPU now: 2 fit now, the third when a node arrives
    asked = AugmentConfig(augmenter="audioldm", num_actors=3, gpus_per_actor=0.5)
    assert pool_plan(asked, {"CPU": 8.0, "GPU": 1.0}, reachable_gpus=6) == PoolPlan(2, 3, 0.5, 1)
    # CPU pools are sized from the cores present, fixed
    assert pool_plan(AugmentConfig(), {"CPU": 4.0, "GPU": 1.0}, reachable_gpus=6) == PoolPlan(4, 4, 0, 0.5)


def test_inference_pools_grow_from_the_workers_that_fit_now():
    from rcmae.distributed.runtime import inference_pool

    plan = scaling_plan(ScaleConfig(use_gpu=True, num_workers=4), {"CPU": 8.0, "GPU": 1.0})
    assert inference_pool(plan, {"CPU": 8.0, "GPU": 1.0}) == PoolPlan(1, 4, 1, plan.resources_per_worker["CPU"])
    cpu = scaling_plan(ScaleConfig(), {"CPU": 2.0})
    assert inference_pool(cpu, {"CPU": 2.0}).min_size == inference_pool(cpu, {"CPU": 2.0}).max_size == cpu.num_workers


def test_a_worker_group_larger_than_a_fixed_cluster_holds_is_refused_before_training():
    """Each worker's bundle fits a node, but 8 half-CPU workers do not fit 2 CPUs: without an autoscaler Ray Train
    would retry the group forever."""
    nodes = [{"CPU": 2.0, "memory": 1e10}]
    with pytest.raises(ResourceError, match=r"8 workers of .* hold 4 at once .* scale.num_workers=4 or less"):
        require_group_feasible("pretrain (Ray Train)", {"CPU": 0.5}, 8, node_types=[], nodes=nodes)
    require_group_feasible("pretrain (Ray Train)", {"CPU": 0.5}, 4, node_types=[], nodes=nodes)
    # an autoscaler that can start nodes: the group may grow into them
    require_group_feasible("pretrain (Ray Train)", {"CPU": 0.5}, 8, node_types=[{"CPU": 4.0}], nodes=nodes)
    with pytest.raises(ResourceError, match="no node of this cluster"):  # one bundle fits nowhere
        require_group_feasible("pretrain (Ray Train)", {"GPU": 1}, 1, node_types=[], nodes=nodes)
