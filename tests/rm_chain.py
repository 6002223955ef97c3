"""The tiny reward model of the test session: trained once (`qwen25-rl rm`) from the arithmetic
chain's SFT model on the synthetic preference set, for the RM stage's own tests and the GRPO
run that scores with it."""

from __future__ import annotations

import subprocess
import sys

import yaml

from qwen25_rl.paths import REPO_ROOT


def rm_config(chain, root, run_name: str, **trainer) -> dict:
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "tiny" / "rm.yaml").read_text())
    data = root / "preferences"
    cfg["model"]["path"] = str(chain / "runs" / "tiny-sft" / "final")
    cfg["data"]["synthetic"] = {"out_dir": str(data), "seed": 0, "num_prompts": 240}
    cfg["data"]["train_files"] = [str(data / "preferences_train.jsonl")]
    cfg["data"]["eval_files"] = [str(data / "preferences_heldout.jsonl")]
    # Two epochs of the 180 training prompts' 1440 pairs: RM_STEPS (max_steps) is what ends it.
    cfg["trainer"].update({"epochs": 2, "eval_every_n_steps": None, "report_interval_s": 0, **trainer})
    cfg["checkpoint"]["every_n_steps"] = None
    cfg["ray"]["include_dashboard"] = False
    cfg["logging"].update(output_dir=str(root / "runs"), run_name=run_name, tensorboard=False, ray_metrics=False)
    return cfg


def run_rm(cfg: dict, path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "rm", "--config", str(path)], capture_output=True, text=True, timeout=1200, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


# Steps of the session's RM (16 pairs each), and the checkpoint the resume test starts from.
RM_STEPS, RM_CHECKPOINT = 160, 140


def train_session_rm(chain, root):
    """The session's RM: RM_STEPS steps with a checkpoint at RM_CHECKPOINT (kept: keep_last 2)."""
    cfg = rm_config(chain, root, "rm", max_steps=RM_STEPS)
    cfg["checkpoint"].update(every_n_steps=RM_CHECKPOINT, keep_last=2)
    run_rm(cfg, root / "rm.yaml")
    return root / "runs" / "rm"
