"""A Ray Train worker killed mid-run (pretraining; SFT and RM run the same worker loop and driver):

- a worker that dies (SIGKILLs itself at a chosen step through the seam of pretrain.progress, as
  the OOM killer would) makes Ray Train restart the worker group from the newest checkpoint
  (`trainer.max_failures`); the run ends in exactly the state of a fault-free run with the same
  seed (each step's rows and loss, the final weights), the failure counted in metrics.jsonl and
  in the summary line, and no process left behind;
- a worker that keeps dying past `trainer.max_failures` stops the run with a message naming the
  worker, the step it was on and where a rerun resumes.

Two DDP workers (the failing one is rank 1, so the other must be torn down and restarted too),
6 steps, a checkpoint every 2; the seam fires at the start of step 4, after `step_2` was saved.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from bounds import SLACK_S

from qwen25_rl.pretrain.prepare import batch_fingerprint
from qwen25_rl.pretrain.progress import FAIL_ENV, FAIL_TIMES_ENV
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1500)]

STEPS, EVERY, GLOBAL_BATCH, FAIL_AT, FAIL_RANK = 6, 2, 4, 4, 1
RUN_S = 600  # one small run: ~40-60 s on an idle 2-core machine, several times that loaded


def _config(root: Path, run_name: str, max_failures: int) -> dict:
    """tests/integration/pretrain/conftest.py's small pretrain run with two DDP workers."""
    data = root / "data"
    return {
        "stage": "pretrain",
        "model": {"preset": "tiny"},
        "data": {
            "synthetic": {"out_dir": str(data), "arithmetic_train": 200, "arithmetic_heldout": 10, "code_train": 40, "code_heldout": 5},
            "sources": [
                {"name": "arithmetic", "files": [str(data / "pretrain_arithmetic.jsonl")], "weight": 0.5},
                {"name": "code", "files": [str(data / "pretrain_code.jsonl")], "weight": 0.5},
            ],
        },
        "tokenizer_training": {"enabled": True, "vocab_size": 400},
        "phases": [{"name": "general", "steps": STEPS, "seq_len": 64}],
        "trainer": {
            "num_workers": 2,
            "strategy": "ddp",
            "micro_batch_size": 2,
            "global_batch_size": GLOBAL_BATCH,
            "cpus_per_worker": 1,
            "max_failures": max_failures,
            "report_interval_s": 0,
        },
        "optimizer": {"lr": 1e-3},
        "checkpoint": {"every_n_steps": EVERY, "keep_last": 2},
        "ray": {"num_cpus": 2, "include_dashboard": False, "object_store_memory_mb": 128},
        "logging": {"output_dir": str(root / "runs"), "run_name": run_name, "tensorboard": False, "ray_metrics": False, "report": False},
    }


def _session_processes(sid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return out


def run_pretrain(root: Path, run_name: str, *, max_failures: int, fault: str | None = None, times: int = 1) -> tuple[int, str, float]:
    """The `pretrain` command in a session of its own: (exit code, output, wall seconds). After it
    exits, nothing of its session (driver, Ray, train workers) may remain."""
    cfg = root / f"{run_name}.yaml"
    cfg.write_text(yaml.safe_dump(_config(root, run_name, max_failures)))
    env = {k: v for k, v in os.environ.items() if k not in (FAIL_ENV, FAIL_TIMES_ENV, "RAY_ADDRESS")}
    if fault is not None:
        env |= {FAIL_ENV: fault, FAIL_TIMES_ENV: str(times)}
    log_path = root / f"{run_name}.log"
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qwen25_rl", "pretrain", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=RUN_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    wall = time.perf_counter() - t0
    deadline = time.time() + 10 + SLACK_S
    while (left := _session_processes(proc.pid)) and time.time() < deadline:
        time.sleep(0.2)
    out = log_path.read_text()
    if left:
        names = [(p.pid, " ".join(p.cmdline())[:120]) for p in left]
        for p in left:
            p.kill()
        pytest.fail(f"processes of the run left behind: {names}")
    return rc, out, wall


@pytest.fixture(scope="module")
def root():
    # Not pytest's tmp_path: other sessions starting on a shared machine can delete it.
    d = Path(tempfile.mkdtemp(prefix="qwen25-train-faults-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def straight(root):
    rc, out, wall = run_pretrain(root, "straight", max_failures=0)
    assert rc == 0, out[-6000:]
    return wall


def _loss_rows(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "final" / "model.safetensors")


def test_a_worker_killed_mid_run_is_restarted_from_the_checkpoint_to_the_fault_free_state(root, straight):
    rc, out, wall = run_pretrain(root, "faulted", max_failures=2, fault=f"{FAIL_AT}:{FAIL_RANK}")
    assert rc == 0, out[-6000:]
    print("".join(ln + "\n" for ln in out.splitlines() if "failed" in ln or "restart" in ln or "kills itself" in ln)[-3000:])
    run, ref = root / "runs" / "faulted", root / "runs" / "straight"
    assert f"worker rank {FAIL_RANK} kills itself at step {FAIL_AT}" in out

    # The failure is counted: one worker_error row (rank, step), a console line, the summary.
    # (The other rank's row is there too when it failed in a collective with the dead one.)
    errors = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "worker_error"]
    assert {e["failure"] for e in errors} == {1}, errors
    assert errors[0]["rank"] == FAIL_RANK and errors[0]["at_step"] == FAIL_AT, errors
    assert f"worker {FAIL_RANK} failed at step {FAIL_AT}" in out and "Ray Train restarts the workers" in out
    summary = json.loads([ln for ln in out.splitlines() if ln.startswith('{"run_dir"')][-1])
    assert summary["worker_failures"] == 1 and summary["steps"] == STEPS

    # The restart went back to step_2 and trained steps 3..6 once more, on the same rows to the
    # same losses as the fault-free run.
    # (Step 3's row may or may not have reached metrics.jsonl before the kill.)
    every_row = read_metrics(run / "metrics.jsonl")
    cut = next(i for i, r in enumerate(every_row) if r.get("event") == "worker_error")
    before = [r["step"] for r in every_row[:cut] if "loss" in r]
    after = [r for r in every_row[cut:] if "loss" in r]
    assert before in ([1, 2], [1, 2, 3]), before
    assert [r["step"] for r in after] == list(range(EVERY + 1, STEPS + 1)), [r["step"] for r in after]
    rows, straight_rows = _loss_rows(run), {r["step"]: r for r in _loss_rows(ref)}
    data = run / "data" / "general" / "train"
    order, ids = np.load(data / "order.npy"), np.load(data / "input_ids.npy")
    for r in rows:
        s = r["step"] - 1
        assert r["batch_hash"] == batch_fingerprint(ids[order[s * GLOBAL_BATCH : (s + 1) * GLOBAL_BATCH]])
        assert r["batch_hash"] == straight_rows[r["step"]]["batch_hash"]
        assert r["loss"] == pytest.approx(straight_rows[r["step"]]["loss"], rel=1e-6), r["step"]
        assert r["grad_norm"] == pytest.approx(straight_rows[r["step"]]["grad_norm"], rel=1e-5), r["step"]

    # The final weights equal the fault-free run's.
    import torch

    mine, theirs = _weights(run), _weights(ref)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), [k for k in mine if not torch.equal(mine[k], theirs[k])][:5]

    # Recovery: from the kill (the seam's marker file) to the first step done after the restart.
    killed_at = (run / f".fault_step{FAIL_AT}_rank{FAIL_RANK}").stat().st_mtime
    recovery = after[0]["wall_time"] - killed_at
    print(f"fault-free run {straight:.1f}s, run with a killed worker {wall:.1f}s, kill -> first step after the restart {recovery:.1f}s")
    assert 0 < recovery < 180 + SLACK_S
    assert wall < 2 * straight + 180 + SLACK_S


def test_a_worker_failing_past_max_failures_stops_the_run_naming_the_worker_and_step(root):
    rc, out, wall = run_pretrain(root, "stopped", max_failures=1, fault=f"{FAIL_AT}:{FAIL_RANK}", times=2)
    assert rc != 0
    stops = [ln for ln in out.splitlines() if ln.startswith("qwen25_rl.pretrain.driver.TrainingStoppedError: ")]
    assert len(stops) == 1, out[-4000:]
    print(stops[0][:3000])
    run = root / "runs" / "stopped"
    last = stops[0]
    assert f"pretrain stopped: worker rank {FAIL_RANK} failed at step {FAIL_AT} (phase general" in last, out[-4000:]
    assert "The workers had been restarted 1 time(s) before (trainer.max_failures: 1)" in last
    assert "a rerun of the stage resumes from step_2" in last
    assert "failure 2 is past trainer.max_failures 1: the run stops" in out
    errors = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "worker_error"]
    firsts = [next(e for e in errors if e["failure"] == n) for n in (1, 2)]
    assert {e["failure"] for e in errors} == {1, 2}, errors
    assert all(e["rank"] == FAIL_RANK and e["at_step"] == FAIL_AT for e in firsts), errors
    assert not (run / "final").exists()
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_2"]
    print(f"run stopped after two worker failures in {wall:.1f}s")
