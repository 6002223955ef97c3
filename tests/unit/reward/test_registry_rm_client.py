"""`reward_model` client against a local HTTP server (loopback) that misbehaves on purpose."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bounds import SLACK_S

from qwen25_rl.reward.rm_client import HTTPRewardFunction, RewardModelParams
from qwen25_rl.reward.types import RewardSample


class Handler(BaseHTTPRequestHandler):
    calls: dict[str, int] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up (the timeout test): expected
            pass

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        samples = json.loads(self.rfile.read(n))["samples"]
        path = self.path
        Handler.calls[path] = Handler.calls.get(path, 0) + 1
        ok = {"results": [{"reward": float(len(s["response"])), "status": "ok", "error": None} for s in samples]}
        if path == "/flaky" and Handler.calls[path] <= 2:
            return self._reply(503, b'{"error": "warming up"}')
        if path == "/down":
            return self._reply(500, b'{"error": "model not loaded"}')
        if path == "/bad-request":
            return self._reply(400, b'{"error": "samples[0]: unknown key"}')
        if path == "/not-json":
            return self._reply(200, b"<html>oops</html>")
        if path == "/short":
            return self._reply(200, json.dumps({"results": ok["results"][:-1]}).encode())
        if path == "/slow":
            time.sleep(15)
        if path == "/mixed":
            ok["results"][0] = {"reward": None, "status": "timeout", "error": "verifier deadline"}
            ok["results"][1]["reward"] = "high"
        self._reply(200, json.dumps(ok).encode())


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def client(url: str, **kw) -> HTTPRewardFunction:
    return HTTPRewardFunction(RewardModelParams(url=url, retry_backoff_s=0.05, **kw))


SAMPLES = [RewardSample(response="a" * n) for n in (1, 2, 3, 4, 5)]


def test_rewards_come_back_in_order_split_into_requests_of_batch_size(server):
    Handler.calls.clear()
    fn = client(f"{server}/ok", batch_size=2)
    out = fn.score_batch(SAMPLES, timeout_s=5)
    assert [o.value for o in out] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert Handler.calls["/ok"] == 3
    fn.close()


def test_server_errors_are_retried(server):
    Handler.calls.clear()
    out = client(f"{server}/flaky", retries=2).score_batch(SAMPLES[:2], timeout_s=5)
    assert [o.value for o in out] == [1.0, 2.0] and Handler.calls["/flaky"] == 3


def test_a_server_that_stays_down_marks_every_sample_as_error(server):
    out = client(f"{server}/down", retries=1).score_batch(SAMPLES[:2], timeout_s=5)
    assert [o.status for o in out] == ["error", "error"]
    assert "HTTP 500" in out[0].error and "model not loaded" in out[0].error and "after 2 tries" in out[0].error


def test_a_rejected_request_is_not_retried(server):
    Handler.calls.clear()
    out = client(f"{server}/bad-request", retries=3).score_batch(SAMPLES[:1], timeout_s=5)
    assert out[0].status == "error" and "HTTP 400" in out[0].error and Handler.calls["/bad-request"] == 1


@pytest.mark.parametrize("path,message", [("/not-json", "non-JSON"), ("/short", "answered 4 results for 5 samples")])
def test_malformed_answers_are_errors_not_zeros(server, path, message):
    out = client(f"{server}{path}").score_batch(SAMPLES, timeout_s=5)
    assert all(o.status == "error" and message in o.error for o in out)


def test_a_slow_server_is_a_timeout(server):
    t = time.perf_counter()
    out = client(f"{server}/slow").score_batch(SAMPLES[:2], timeout_s=0.25)
    assert [o.status for o in out] == ["timeout", "timeout"] and time.perf_counter() - t < 2 * 0.25 + SLACK_S


def test_per_sample_statuses_and_bad_values_from_the_server(server):
    out = client(f"{server}/mixed").score_batch(SAMPLES[:3], timeout_s=5)
    assert out[0].status == "timeout" and "verifier deadline" in out[0].error
    assert out[1].status == "error" and "'high'" in out[1].error
    assert (out[2].status, out[2].value) == ("ok", 3.0)


def test_unreachable_endpoint_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    out = client(f"http://127.0.0.1:{port}/reward", retries=0).score_batch(SAMPLES[:1], timeout_s=2)
    assert out[0].status == "error" and "cannot reach" in out[0].error


def test_url_must_be_http():
    with pytest.raises(ValueError, match="http://"):
        RewardModelParams(url="127.0.0.1:8000/reward")
