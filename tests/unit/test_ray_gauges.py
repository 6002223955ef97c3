"""Ray metrics names: every stage exports through `qwen25_rl.metrics.RayGauges` as
`qwen25_rl_<stage>_<key>` with a `run` tag (Ray's Prometheus endpoint adds `ray_`), the Ray
Train stages (pretrain, SFT, RM) too, from their run-folder callback. No Ray cluster: the Gauge
class is replaced by a recorder."""

from __future__ import annotations

import pytest

from qwen25_rl.metrics import RayGauges


class FakeGauge:
    made: dict[str, FakeGauge] = {}

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] = ()):
        self.name, self.description, self.tag_keys = name, description, tag_keys
        self.values: list[tuple[float, dict[str, str]]] = []
        FakeGauge.made[name] = self

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.values.append((value, tags))


@pytest.fixture
def gauges(monkeypatch):
    import ray
    import ray.util.metrics

    FakeGauge.made = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray.util.metrics, "Gauge", FakeGauge)
    return FakeGauge.made


def test_names_are_the_stage_and_the_key_with_a_run_tag(gauges):
    g = RayGauges("grpo", "my-run", descriptions={"reward/mean": "mean reward per response"})
    g.set({"reward/mean": 0.5, "reward/math/mean": 1, "eval/pass@4": 0.25, "step": 3})
    g.set({"reward/mean": 0.75})
    assert sorted(gauges) == [
        "qwen25_rl_grpo_eval_pass_4",
        "qwen25_rl_grpo_reward_math_mean",
        "qwen25_rl_grpo_reward_mean",
        "qwen25_rl_grpo_step",
    ]
    reward = gauges["qwen25_rl_grpo_reward_mean"]
    assert reward.values == [(0.5, {"run": "my-run"}), (0.75, {"run": "my-run"})]
    assert reward.tag_keys == ("run",) and reward.description == "mean reward per response"
    assert gauges["qwen25_rl_grpo_step"].description == "grpo step"


def test_values_that_are_not_numbers_are_not_exported(gauges):
    RayGauges("dpo", "r").set({"phase": "general", "ok": True, "nan": float("nan"), "inf": float("inf"), "none": None, "loss": 1.5})
    assert list(gauges) == ["qwen25_rl_dpo_loss"]


def test_nothing_is_exported_outside_ray(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    g = RayGauges("grpo", "r")
    g.set({"reward/mean": 1.0})
    assert g._gauges == {}


@pytest.mark.parametrize("stage", ["pretrain", "sft", "rm"])
def test_ray_train_stages_export_every_numeric_field_of_a_step(gauges, tmp_path, stage):
    """The Ray Train controller's callback (pretrain, SFT and RM share it) hands each step row
    to RayGauges: loss, lr, tokens/s, held-out numbers and the step, tagged with the run name."""
    from qwen25_rl.pretrain.callbacks import RunFolderCallback

    cb = RunFolderCallback(str(tmp_path), stage, tensorboard=False, console=False, ray_metrics=True, run_name="tiny-run")
    rows = [
        {"step": 1, "phase": "general", "loss": 2.5, "lr": 1e-3, "tokens_per_s": 900.0, "wall_time": 1.8e9},
        {"step": 2, "phase": "general", "loss": 2.0, "lr": 1e-3, "tokens_per_s": 950.0, "eval_loss": 2.2, "eval_accuracy/helpful": 0.75},
    ]
    cb.after_report(None, [{"rows": rows}], None)
    prefix = f"qwen25_rl_{stage}_"
    assert sorted(gauges) == sorted(
        prefix + k for k in ("step", "loss", "lr", "tokens_per_s", "eval_loss", "eval_accuracy_helpful")
    )  # no gauge for the phase name or the timestamp
    assert gauges[prefix + "loss"].values == [(2.5, {"run": "tiny-run"}), (2.0, {"run": "tiny-run"})]
    assert [v for v, _ in gauges[prefix + "step"].values] == [1.0, 2.0]
    assert gauges[prefix + "loss"].description == "training loss (token mean) of the last step"
    assert (tmp_path / "metrics.jsonl").is_file()


def test_ray_train_stages_can_turn_ray_metrics_off(gauges, tmp_path):
    from qwen25_rl.pretrain.callbacks import RunFolderCallback

    cb = RunFolderCallback(str(tmp_path), "sft", tensorboard=False, console=False, ray_metrics=False, run_name="r")
    cb.after_report(None, [{"rows": [{"step": 1, "loss": 1.0}]}], None)
    assert gauges == {}
