"""The tiny pretrain -> SFT chain of the synthetic arithmetic task (configs/tiny/*.yaml with
smaller budgets), run once per test session for the tests that need an SFT checkpoint: the
chain's own tests and the DPO learning test that starts from its SFT model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from qwen25_rl.paths import REPO_ROOT

# Small enough for a few minutes on 2 cores, large enough that SFT measurably teaches the
# held-out arithmetic (see the accuracy test for the numbers seen).
SYNTHETIC = {
    "arithmetic_train": 1500,
    "arithmetic_heldout": 100,
    "code_train": 200,
    "code_heldout": 20,
    "max_operand": 5,
    "max_factor": 5,
    "families": ["add", "sub"],
}
PRETRAIN_STEPS, LONG_STEPS, SFT_STEPS = 120, 8, 80
BATCH = {"micro_batch_size": 4, "global_batch_size": 4}


def stage_config(name: str, root: Path) -> Path:
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "tiny" / f"{name}.yaml").read_text())
    data = root / "data"
    old = cfg["data"]["synthetic"]["out_dir"]
    cfg["data"]["synthetic"] = {"out_dir": str(data), "seed": 0, **SYNTHETIC}

    def repath(files):
        return [f.replace(old, str(data)) for f in files]

    if name == "pretrain":
        for s in cfg["data"]["sources"]:
            s["files"] = repath(s["files"])
        cfg["data"]["eval_files"] = repath(cfg["data"]["eval_files"])
        cfg["phases"][0]["steps"] = PRETRAIN_STEPS
        cfg["phases"][1].update(steps=LONG_STEPS, global_batch_size=4)
        cfg["trainer"]["eval_every_n_steps"] = None
        cfg["checkpoint"]["every_n_steps"] = None
    else:
        cfg["model"]["path"] = str(root / "runs" / "tiny-pretrain" / "final")
        cfg["data"]["train_files"] = repath(cfg["data"]["train_files"])
        cfg["data"]["eval_files"] = repath(cfg["data"]["eval_files"])
        cfg["trainer"]["max_steps"] = SFT_STEPS
        cfg["data"]["max_length"] = 256
        cfg["trainer"]["eval_every_n_steps"] = None
        cfg["checkpoint"]["every_n_steps"] = None
    cfg["trainer"].update(BATCH)
    cfg["ray"]["include_dashboard"] = False
    cfg["logging"].update(output_dir=str(root / "runs"), tensorboard=False, ray_metrics=False)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


PIPELINE_STAGES = [("tiny-pretrain", "pretrain", None), ("tiny-sft", "sft", "tiny-pretrain")]


def chain_pipeline(root: Path, extra_stages: list[dict] | None = None) -> Path:
    """The chain as a `qwen25-rl pipeline` file: its stage folders are root/runs/tiny-pretrain and
    root/runs/tiny-sft; `extra_stages` go after them (a later test extends the same pipeline, so its
    rerun skips the two completed stages)."""
    stages = []
    for name, kind, parent in PIPELINE_STAGES:
        stages.append({"name": name, "stage": kind, "config": str(stage_config(kind, root))} | ({"from": parent} if parent else {}))
    cfg = {
        "stage": "pipeline",
        "output_dir": str(root / "runs"),
        "ray": {"num_cpus": 4, "object_store_memory_mb": 400, "include_dashboard": False},
        "stages": stages + list(extra_stages or []),
    }
    path = root / ("pipeline.yaml" if not extra_stages else "pipeline-extended.yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_pipeline_command(path: Path, log: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "pipeline", "--config", str(path)], capture_output=True, text=True, timeout=timeout
    )
    log.write_text(proc.stdout + proc.stderr)
    return proc


def run_chain(root: Path):
    proc = run_pipeline_command(chain_pipeline(root), root / "chain.log")
    assert proc.returncode == 0, f"the chain's pipeline failed (logs in {root}):\n{proc.stdout[-3000:]}\n{stage_errors(proc.stderr)}"
    yield root


def stage_errors(stderr: str) -> str:
    """The lines of a failed stage's stderr worth reading (Ray repeats actor stack dumps)."""
    lines = [line for line in stderr.splitlines() if "PlacementGroupCleaner" not in line]
    return "\n".join(lines[-60:])
