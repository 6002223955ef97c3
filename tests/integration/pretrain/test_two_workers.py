"""Two DeepSpeed ZeRO-2 workers compute the same optimizer steps as one process.

Each worker trains on its half of every step's rows with gradient accumulation; the loss of
every micro-batch is normalised by the token count of the whole step. The per-step loss and
gradient norm must therefore equal those of the single-process reference over the same rows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from qwen25_rl.pretrain.reference import reference_steps
from qwen25_rl.runs import read_metrics
from qwen25_rl.training.schedule import PhaseSchedule

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

STEPS, GLOBAL, MICRO = 4, 8, 2
OPTIMIZER = {"lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "grad_clip": 1.0}


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="qwen25-2w-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_two_zero2_workers_match_the_single_process_reference(workdir, small_pretrain_config):
    cfg = small_pretrain_config(
        workdir,
        "two",
        steps=STEPS,
        weights=(0.6, 0.4),
        trainer={
            "num_workers": 2,
            "strategy": "deepspeed",
            "zero_stage": 2,
            "micro_batch_size": MICRO,
            "global_batch_size": GLOBAL,
            "cpus_per_worker": 1,
        },
        optimizer=OPTIMIZER,
        scheduler={"name": "cosine", "warmup_steps": 1, "min_lr_ratio": 0.1},
        checkpoint={"every_n_steps": None},
    )
    path = workdir / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "pretrain", "--config", str(path)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + "\n".join(proc.stderr.splitlines()[-60:])

    run = workdir / "runs" / "two"
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    ref = reference_steps(
        run / "initial_model",
        run / "data" / "general" / "train",
        steps=STEPS,
        global_batch=GLOBAL,
        micro_batch=MICRO,
        schedule=PhaseSchedule(steps=STEPS, peak_lr=OPTIMIZER["lr"], warmup_steps=1, decay="cosine", min_lr_ratio=0.1),
        optimizer=OPTIMIZER,
    )
    assert [r["loss"] for r in rows] == pytest.approx(ref.losses, rel=1e-4)
    assert [r["grad_norm"] for r in rows] == pytest.approx(ref.grad_norms, rel=1e-3)
    assert [r["tokens"] for r in rows] == ref.tokens_per_step
