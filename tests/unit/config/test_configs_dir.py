"""Every YAML under configs/ is a valid config of its stage and mirrors the schema 1:1."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qwen25_rl.config import load_config
from qwen25_rl.paths import REPO_ROOT

CONFIG_FILES = sorted((REPO_ROOT / "configs").rglob("*.yaml"))


def _stage_of(path: Path) -> str | None:
    data = yaml.safe_load(path.read_text())
    return data.get("stage") if isinstance(data, dict) else None


@pytest.mark.parametrize(
    "path", [p for p in CONFIG_FILES if _stage_of(p) not in (None, "pipeline")], ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_config_file_validates(path):
    load_config(path)


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if _stage_of(p) == "pipeline"], ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_pipeline_file_and_every_stage_config_it_builds_validate(path):
    from qwen25_rl.stages.pipeline import load_pipeline, plan

    assert plan(*load_pipeline(path))


def test_base_yaml_lists_every_schema_key():
    """configs/tiny/base.yaml is the schema's defaults written out: same keys, same values."""
    from qwen25_rl.config import StageConfig

    data = yaml.safe_load((REPO_ROOT / "configs" / "tiny" / "base.yaml").read_text())
    # Validated without the path resolution load_config applies (that depends on where it runs).
    assert StageConfig.model_validate(data) == StageConfig()
    assert set(data) == set(StageConfig.model_fields)
    for section, value in data.items():
        if isinstance(value, dict):
            assert set(value) == set(type(getattr(StageConfig(), section)).model_fields), section
