"""bench/weight_sync_nodes.py --quick: a two-node simulated cluster, both CPU transports, the
receiver on the other node and on the same node; every sync delivers the sender's weights (the
script checks it) and the figures come back in its JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from qwen25_rl.paths import REPO_ROOT


@pytest.mark.slow
def test_weight_sync_between_nodes_quick_mode(tmp_path):
    out = tmp_path / "weight_sync.json"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "bench" / "weight_sync_nodes.py"), "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the script shuts its simulated nodes down
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("bench/weight_sync_nodes.py --quick timed out")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["matmul_gflops_fp32"] > 0 and result["command"].endswith("--quick --out " + str(out))
    rows = result["results"]
    assert {(r["transport"], r["placement"]) for r in rows} == {
        (t, p) for t in ("object_store", "broadcast") for p in ("cross-node", "same-node")
    }
    # tiny preset, float32: the object store sends every weight once; the broadcast sends the
    # tied output head a second time, under its own name.
    from qwen25_rl.models.presets import get_preset

    tiny = get_preset("tiny")
    for r in rows:
        head = tiny.vocab_size * tiny.hidden_size if r["transport"] == "broadcast" else 0
        assert r["bytes_per_sync"] == 4 * (r["parameters"] + head), r
    for r in rows:
        assert len(r["sync_s"]) == 2 and r["median_s"] > 0 and r["gb_per_s"] > 0, r
    assert "GB/s" in stdout
