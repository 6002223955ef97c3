"""Stage configs: the shipped YAML files load; inconsistent settings are refused with the reason."""

from __future__ import annotations

import pytest

from qwen25_rl.config import ConfigError, load_config
from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.pretrain.config import PretrainConfig, SFTConfig


@pytest.mark.parametrize("path", ["configs/tiny/pretrain.yaml", "configs/qwen2.5-0.5b/pretrain.yaml"])
def test_pretrain_configs_load_with_a_long_context_phase(path):
    cfg = load_config(REPO_ROOT / path, schema=PretrainConfig)
    assert cfg.stage == "pretrain"
    assert cfg.phases[-1].rope_theta == 1_000_000.0
    assert cfg.phases[-1].seq_len > cfg.phases[0].seq_len


@pytest.mark.parametrize("path", ["configs/tiny/sft.yaml", "configs/qwen2.5-0.5b/sft.yaml"])
def test_sft_configs_load(path):
    cfg = load_config(REPO_ROOT / path, schema=SFTConfig)
    assert cfg.model.path


def test_real_configs_use_the_reports_sft_length():
    assert load_config(REPO_ROOT / "configs/qwen2.5-0.5b/sft.yaml").data.max_length == 8192


def _pretrain(**over):
    base = {
        "stage": "pretrain",
        "model": {"preset": "tiny"},
        "tokenizer_training": {"enabled": True},
        "data": {"sources": [{"name": "a", "files": ["x.jsonl"]}]},
        "phases": [{"name": "p", "steps": 1, "seq_len": 8}],
    }
    for k, v in over.items():
        base[k] = v
    return base


def _problems(tmp_path, data) -> str:
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    return str(e.value)


def test_global_batch_must_split_into_micro_batches(tmp_path):
    msg = _problems(tmp_path, _pretrain(trainer={"num_workers": 2, "micro_batch_size": 3, "global_batch_size": 8}))
    assert "multiple of num_workers * micro_batch_size (2 * 3 = 6)" in msg


def test_zero3_on_cpu_is_refused(tmp_path):
    assert "ZeRO-3 over gloo" in _problems(tmp_path, _pretrain(trainer={"zero_stage": 3}))


def test_preset_model_needs_a_tokenizer(tmp_path):
    assert "needs a tokenizer" in _problems(tmp_path, _pretrain(tokenizer_training={"enabled": False}))


def test_unknown_phase_key_is_named(tmp_path):
    assert "rope_base" in _problems(tmp_path, _pretrain(phases=[{"name": "p", "steps": 1, "seq_len": 8, "rope_base": 1e6}]))


def test_sft_needs_a_model_path(tmp_path):
    assert "model.path" in _problems(tmp_path, {"stage": "sft", "data": {"train_files": ["a.jsonl"]}})
