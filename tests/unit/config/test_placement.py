"""Worker placement against the hardware a config names (qwen25_rl.config.placement), and the
GPU configs under configs/ against the node each one names."""

from __future__ import annotations

import pytest
import yaml

from qwen25_rl.config import load_config
from qwen25_rl.config.loader import ConfigError
from qwen25_rl.config.placement import GroupDemand, placement_problems, totals
from qwen25_rl.paths import REPO_ROOT

GPU_CONFIGS = sorted(p for p in (REPO_ROOT / "configs").rglob("*.yaml") if p.parent.name.startswith("qwen2.5-"))
NODE8 = dict(nodes=1, gpus_per_node=8, cpus_per_node=96)


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_gpu_config_names_its_hardware_and_its_workers_fit_it(path):
    cfg = load_config(path)  # the config validator places the workers (see below)
    hw = cfg.ray.hardware
    assert hw is not None, f"{path}: a GPU config states the machines it is written for (ray.hardware)"
    cpus, gpus = totals(cfg.worker_groups())
    assert 0 < gpus <= hw.nodes * hw.gpus_per_node and cpus <= hw.nodes * hw.cpus_per_node
    assert placement_problems(cfg.worker_groups(), nodes=hw.nodes, gpus_per_node=hw.gpus_per_node, cpus_per_node=hw.cpus_per_node) == []


def test_the_old_7b_grpo_layout_asks_16_gpus_of_an_8_gpu_node():
    old = [GroupDemand("rollout", 8, 2, 1), GroupDemand("policy", 8, 2, 0.5), GroupDemand("reference", 8, 1, 0.5)]
    (problem,) = placement_problems(old, **NODE8)
    assert "16 GPUs" in problem and "hold 8 GPUs" in problem and "policy 8, reference 8" in problem


def test_a_config_whose_workers_do_not_fit_its_hardware_fails_at_load(tmp_path):
    data = yaml.safe_load((REPO_ROOT / "configs/qwen2.5-7b/grpo.yaml").read_text())
    data["rollout"]["num_workers"] = 8
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"ray\.hardware: the workers ask for 12 GPUs") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_half_gpu_workers_share_a_gpu_in_pairs():
    assert (
        placement_problems(
            [GroupDemand("policy", 4, 1, 0.5), GroupDemand("reference", 4, 1, 0.5)], nodes=1, gpus_per_node=4, cpus_per_node=8
        )
        == []
    )
    # 1 whole + 3 halves need 2.5 GPUs: two GPUs do not hold them.
    (problem,) = placement_problems(
        [GroupDemand("rollout", 1, 1, 1), GroupDemand("policy", 3, 1, 0.5)], nodes=1, gpus_per_node=2, cpus_per_node=8
    )
    assert "policy 1" in problem


def test_fractions_that_do_not_pair_up_need_a_gpu_each():
    # 0.7 + 0.7 = 1.4 GPUs in all, but no GPU holds two of them.
    assert placement_problems([GroupDemand("a", 2, 1, 0.7)], nodes=1, gpus_per_node=2, cpus_per_node=8) == []
    assert placement_problems([GroupDemand("a", 2, 1, 0.7)], nodes=2, gpus_per_node=1, cpus_per_node=8) == []
    assert placement_problems([GroupDemand("a", 3, 1, 0.7)], nodes=1, gpus_per_node=2, cpus_per_node=8)


def test_cpus_count_per_node_not_in_total():
    # 2 nodes of 4 CPUs hold 8 CPUs, but not two workers of 3 CPUs plus one of 2 on one node.
    assert placement_problems([GroupDemand("w", 2, 3)], nodes=2, gpus_per_node=0, cpus_per_node=4) == []
    (problem,) = placement_problems([GroupDemand("w", 3, 3)], nodes=2, gpus_per_node=0, cpus_per_node=4)
    assert "w 1" in problem


def test_a_worker_larger_than_a_node_is_named():
    (problem,) = placement_problems([GroupDemand("rollout", 1, 2, 4)], nodes=4, gpus_per_node=2, cpus_per_node=8)
    assert problem.startswith("rollout: one worker asks for 2 CPUs and 4 GPUs")


def test_a_fraction_above_one_gpu_is_refused():
    (problem,) = placement_problems([GroupDemand("policy", 1, 1, 1.5)], **NODE8)
    assert "1.5 GPUs per worker" in problem


def test_grpo_counts_the_reference_only_when_the_kl_term_needs_it():
    cfg = load_config(REPO_ROOT / "configs/qwen2.5-7b/grpo.yaml")
    assert "reference" in [g.name for g in cfg.worker_groups()]
    no_kl = cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"kl_coef": 0.0})})
    assert "reference" not in [g.name for g in no_kl.worker_groups()]
