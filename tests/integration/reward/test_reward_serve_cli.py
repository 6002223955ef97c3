"""`qwen25-rl serve-reward --config configs/tiny/serve_reward.yaml` end to end: it starts its
own Ray, serves on loopback, answers, and shuts down cleanly on SIGINT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from qwen25_rl.paths import REPO_ROOT


@pytest.mark.slow
def test_serve_reward_command_serves_until_interrupted(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "qwen25_rl",
        "serve-reward",
        "--config",
        str(REPO_ROOT / "configs/tiny/serve_reward.yaml"),
        f"serve.port={port}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, start_new_session=True)
    lines: list[str] = []
    url: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving reward at "):
                url.append(line.split()[3])
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(240), "no 'serving' line within 240 s:\n" + "".join(lines[-30:])
        assert url[0] == f"http://127.0.0.1:{port}/reward"
        body = json.dumps({"samples": [{"response": r"so \boxed{42}", "answer": "42"}, {"response": "#### 41", "answer": "42"}]}).encode()
        req = urllib.request.Request(url[0], data=body, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            results = json.loads(r.read())["results"]
        assert [r["reward"] for r in results] == [pytest.approx(1.1), 0.0]  # math + 0.1 x format
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, "".join(lines[-30:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.5)
    with pytest.raises(OSError):  # nothing listens there any more
        urllib.request.urlopen(url[0], timeout=5)
