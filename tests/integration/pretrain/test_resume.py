"""Killing a Ray Train worker mid-run: the restarted worker group resumes from the newest
checkpoint and trains on exactly the rows an uninterrupted run would have used."""

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

from qwen25_rl.pretrain.prepare import batch_fingerprint
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

STEPS, EVERY, GLOBAL_BATCH = 20, 5, 4


def _config(tmp_path, small_pretrain_config) -> dict:
    return small_pretrain_config(
        tmp_path,
        "resume",
        steps=STEPS,
        trainer={
            "strategy": "ddp",
            "micro_batch_size": 2,
            "global_batch_size": GLOBAL_BATCH,
            "max_failures": 1,
            "cpus_per_worker": 1,
            # Every step reaches metrics.jsonl at once, so the test can kill at a known step.
            "report_interval_s": 0,
        },
        optimizer={"lr": 1e-3},
        checkpoint={"every_n_steps": EVERY, "keep_last": 2},
    )


def _train_workers(root: int) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(root).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
def workdir():
    # Not pytest's tmp_path: other sessions starting on a shared machine can delete it.
    d = Path(tempfile.mkdtemp(prefix="qwen25-resume-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_killed_worker_resumes_from_checkpoint_with_the_same_data_order(workdir, small_pretrain_config):
    tmp_path = workdir
    cfg_path = tmp_path / "pretrain.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, small_pretrain_config)))
    run = tmp_path / "runs" / "resume"
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwen25_rl", "pretrain", "--config", str(cfg_path)], stdout=log, stderr=subprocess.STDOUT
    )
    killed_at = None
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
            done = max((r["step"] for r in rows if "loss" in r), default=0)
            if done >= EVERY + 2:
                workers = _train_workers(proc.pid)
                assert workers, "no RayTrainWorker process found under the driver"
                for w in workers:
                    os.kill(w.pid, signal.SIGKILL)
                killed_at = done
                break
            time.sleep(0.05)
        assert killed_at is not None, "training ended or stalled before the kill"
        assert killed_at < STEPS, "the kill came after training ended"
        assert proc.wait(timeout=400) == 0, (tmp_path / "log.txt").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    rows = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    steps = [r["step"] for r in rows]
    # The restart goes back to the newest checkpoint at or before the kill...
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    resumed_from = steps[restart] - 1
    assert resumed_from % EVERY == 0 and EVERY <= resumed_from <= killed_at
    assert steps[restart:] == list(range(resumed_from + 1, STEPS + 1))

    # ...replays the steps after it with the same rows and the same result (model and
    # optimizer state restored exactly)...
    first = {r["step"]: r for r in rows[:restart]}
    for r in rows[restart:]:
        if r["step"] in first:
            assert r["batch_hash"] == first[r["step"]]["batch_hash"]
            assert r["loss"] == pytest.approx(first[r["step"]]["loss"], rel=1e-5)

    # ...and every step used the rows the fixed order assigns to it.
    data = run / "data" / "general" / "train"
    order, ids = np.load(data / "order.npy"), np.load(data / "input_ids.npy")
    for r in rows:
        s = r["step"] - 1
        assert r["batch_hash"] == batch_fingerprint(ids[order[s * GLOBAL_BATCH : (s + 1) * GLOBAL_BATCH]])

    state = json.loads((run / "checkpoints" / f"step_{STEPS}" / "trainer_state.json").read_text())
    assert state["step"] == STEPS
    assert (run / "final" / "model.safetensors").is_file()
