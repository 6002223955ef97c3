"""Chaos: 200 concurrent requests at the served reward (reward.serve on Ray Serve, loopback
only) with a small bounded queue, so that overload really happens. Every request is answered
200 or 503 (with Retry-After), never 500 or a hang; at least one 503 occurs (otherwise the
test proves nothing); afterwards a normal request answers 200 and the deployment is healthy.

The serve settings are those of configs/tiny/serve_reward.yaml with overrides, so the YAML
keys are the ones exercised. Bounded: a client pool of 32 threads, a timeout per request, a
bound on the whole storm, Serve shut down at the end.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from bounds import SLACK_S

from qwen25_rl.commands.reward import ServeRewardConfig
from qwen25_rl.config import load_config
from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.reward.config import RewardConfig

pytestmark = pytest.mark.chaos

REQUESTS = 200
CLIENT_THREADS = 32
REQUEST_TIMEOUT_S = 60.0
SAMPLE_SECONDS = 0.2  # the slow reward: each sample takes this long
MAX_ONGOING = 2
MAX_QUEUED = 4
RETRY_AFTER_S = 1

SLOW_REWARD = f"""
import time


def slow(sample):
    time.sleep({SAMPLE_SECONDS})
    return 1.0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float) -> tuple[int | str, dict[str, str], bytes]:
    """(status, headers, body); a transport failure is (its exception name, {}, b'')."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except Exception as e:  # refused, reset, timed out: counted, never an unbounded wait
        return type(e).__name__, {}, b""


@pytest.fixture
def endpoint(local_ray, tmp_path):
    from ray import serve

    from qwen25_rl.reward.serve import deploy

    plugin = tmp_path / "slow_reward.py"
    plugin.write_text(textwrap.dedent(SLOW_REWARD))
    port = _free_port()
    cfg = load_config(
        REPO_ROOT / "configs/tiny/serve_reward.yaml",
        [
            f"serve.port={port}",
            "serve.app_name=overload",
            "serve.route_prefix=/overload",
            "serve.num_cpus_per_replica=0.5",
            f"serve.max_ongoing_requests={MAX_ONGOING}",
            f"serve.max_queued_requests={MAX_QUEUED}",
            f"serve.retry_after_s={RETRY_AFTER_S}",
            "serve.max_batch_size=2",
        ],
        schema=ServeRewardConfig,
    )
    reward = RewardConfig.model_validate({"functions": [{"type": f"{plugin}:slow", "timeout_s": 10}]})
    try:
        yield deploy(cfg.serve, reward_cfg=reward), port
    finally:
        serve.shutdown()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # nothing listens there any more: the server is down


def test_overload_is_answered_503_with_retry_after_and_the_endpoint_recovers(endpoint):
    url, port = endpoint
    one = {"samples": [{"response": "hello"}]}
    status, _, body = post(url, one, REQUEST_TIMEOUT_S)
    assert status == 200 and json.loads(body)["results"][0]["reward"] == 1.0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as clients:
        answers = list(clients.map(lambda _: post(url, one, REQUEST_TIMEOUT_S), range(REQUESTS)))
    storm_s = time.perf_counter() - t0
    counts = Counter(status for status, _, _ in answers)
    print(f"\noverload: {REQUESTS} requests from {CLIENT_THREADS} threads in {storm_s:.2f} s: {dict(counts)}")

    assert set(counts) <= {200, 503}, f"answers other than 200/503: {dict(counts)}"
    assert counts[503] >= 1, "no 503: the queue never filled, the test proves nothing"
    assert counts[200] >= 1
    for status, headers, body in answers:
        if status == 503:
            assert {k.lower(): v for k, v in headers.items()}.get("retry-after") == str(RETRY_AFTER_S)
        else:
            assert [r["status"] for r in json.loads(body)["results"]] == ["ok"]
    # Accepted requests are served at most MAX_ONGOING at a time, SAMPLE_SECONDS each; a
    # rejected one costs a few ms. Bounded far below REQUESTS x REQUEST_TIMEOUT_S.
    assert storm_s < counts[200] * SAMPLE_SECONDS + 30 + SLACK_S

    # Healthy afterwards: a normal request is served at once, and Serve reports it healthy.
    t = time.perf_counter()
    status, _, body = post(url, {"samples": [{"response": "after"}, {"response": "the storm"}]}, REQUEST_TIMEOUT_S)
    recovery_s = time.perf_counter() - t
    print(f"overload: first request after the storm answered {status} in {recovery_s:.2f} s")
    assert status == 200 and [r["reward"] for r in json.loads(body)["results"]] == [1.0, 1.0]
    assert recovery_s < 2 * SAMPLE_SECONDS + SLACK_S
    with urllib.request.urlopen(url, timeout=30) as r:
        info = json.loads(r.read())
    assert info["stats"]["requests"] == counts[200] + 2  # the rejected ones never reached the replica

    from ray import serve

    app = serve.status().applications["overload"]
    assert app.status == "RUNNING"
    assert all(d.status == "HEALTHY" for d in app.deployments.values())
