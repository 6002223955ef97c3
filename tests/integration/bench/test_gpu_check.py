"""bench/gpu_check.py in its CPU mode (small shapes): what the GPU run will execute, checked
here first. The loss part compares the fused policy loss with the naive path and with Liger
Kernel's fused GRPO loss (an oracle: same loss and gradients); the update part runs the policy
worker's optimizer step under DeepSpeed ZeRO-2 and ZeRO-3."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from environment import skip_missing

from qwen25_rl.paths import REPO_ROOT


def test_gpu_check_cpu_mode_runs_and_the_three_losses_agree(tmp_path):
    try:
        import liger_kernel.chunked_loss  # noqa: F401
    except ImportError:
        skip_missing("liger-kernel (make setup installs it)")
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--repeats", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["problems"] == [] and result["matmul_tflops"] > 0
    losses = result["loss"]["results"]
    assert set(losses) == {"ours", "naive", "liger"}
    for name, r in losses.items():
        assert r["loss_abs_diff_vs_naive"] < 1e-5 and r["grad_rel_diff_vs_naive"] < 1e-4, name
        assert r["seconds"] > 0
    update = result["update"]["results"]
    assert set(update) == {"zero2", "zero3"}
    for name, r in update.items():
        assert r["loss_finite"] and math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0, name
        assert r["tokens_per_step"] == 4 * (16 + 48) and 0 < r["mfu_vs_measured_matmul"] < 1.5, name
    assert "zero3: " in proc.stdout and "MFU" in proc.stdout
