"""Rewards on Ray Serve (loopback only): a reward config and tiny learned reward models (one
output, and a 3-criterion RM folder as `qwen25-rl rm` writes it) behind HTTP JSON with
@serve.batch, and the reward pool calling such an endpoint as a reward. A served RM gives the
numbers of `qwen25_rl.reward.learned.RewardModelScorer`, the RL stages' RM scoring path."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from qwen25_rl.errors import UserPathError
from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.scorer import RewardScorer, combine
from qwen25_rl.reward.serve_config import RewardModelServeConfig, ServeConfig
from qwen25_rl.reward.types import RewardResult, RewardSample


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body, timeout: float = 60) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


REWARD_CFG = {"functions": [{"type": "math", "timeout_s": 3.0}, {"type": "format", "weight": 0.1}]}
CRITERIA = ["helpfulness", "correctness", "verbosity"]
WEIGHTS = {"helpfulness": 1.0, "correctness": 2.0, "verbosity": -0.5}
RM_MAX_LENGTH = 96


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Qwen2 sequence-classification reward model (random weights, one output)."""
    import torch
    from transformers import Qwen2ForSequenceClassification

    from qwen25_rl.models import build_model

    config = build_model("tiny", tokenizer=tiny_tokenizer, seed=0).config
    config.num_labels = 1
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(config)
    out = tmp_path_factory.mktemp("rm")
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def rm3_dir(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    """A 3-criterion RM folder as `qwen25-rl rm` writes it: the tiny policy's backbone with a
    new score head, its tokenizer, reward_model.json (weights, a short max_length)."""
    from qwen25_rl.models.reward_model import save_new_reward_model

    out = tmp_path_factory.mktemp("rm3") / "rm3"
    save_new_reward_model(out, tiny_model_dir, tiny_tokenizer, CRITERIA, WEIGHTS, max_length=RM_MAX_LENGTH, seed=5)
    return out


@pytest.fixture(scope="module")
def endpoints(local_ray, rm_dir, rm3_dir):
    from ray import serve

    from qwen25_rl.reward.serve import deploy

    port = _port()
    common = {"port": port, "num_cpus_per_replica": 0.5, "batch_wait_timeout_s": 0.05}
    reward_url = deploy(
        ServeConfig(app_name="rewardfns", route_prefix="/reward", **common), reward_cfg=RewardConfig.model_validate(REWARD_CFG)
    )
    rm_url = deploy(
        ServeConfig(app_name="rm", route_prefix="/rm", max_batch_size=16, **common),
        rm_cfg=RewardModelServeConfig(path=str(rm_dir), micro_batch_size=4),
    )
    # max_length left null: the RM's own (reward_model.json); micro-batches of 2 inside Serve's
    # batches, unlike the in-process scorer the test compares with.
    rm3_url = deploy(
        ServeConfig(app_name="rm3", route_prefix="/rm3", max_batch_size=16, **common),
        rm_cfg=RewardModelServeConfig(path=str(rm3_dir), micro_batch_size=2),
    )
    yield {"reward": reward_url, "rm": rm_url, "rm3": rm3_url}
    serve.shutdown()


def math_samples() -> list[RewardSample]:
    return [
        RewardSample(r"so \boxed{12}", answer="12", group_id=0),
        RewardSample("#### 12", answer="12", group_id=0),
        RewardSample(r"\boxed{\frac{3}{4}}", answer="0.75", group_id=1),
        RewardSample("the answer is 7", answer="8", group_id=1),
        RewardSample("no gold for me", answer=None, group_id=2),
    ]


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (Serve's proxy, in its own process)."""
    import psutil

    return {c.laddr.ip for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_endpoint_listens_on_loopback_only(endpoints):
    port = int(endpoints["reward"].split(":")[2].split("/")[0])
    # What the proxy's socket is bound to, not what the URL says (a server bound to 0.0.0.0
    # would still be announced as 127.0.0.1).
    assert listening_addresses(port) == {"127.0.0.1"}


def test_served_reward_config_matches_the_in_process_scorer(endpoints):
    samples = math_samples()
    status, body = post(endpoints["reward"], {"samples": [s.to_dict() for s in samples]})
    assert status == 200
    cfg = RewardConfig.model_validate(REWARD_CFG)
    with RewardScorer(cfg) as scorer:
        want = [combine(s, o, cfg) for s, o in zip(samples, scorer.score_raw(samples))]
    got = [RewardResult.from_dict(r) for r in body["results"]]
    assert [(r.reward, r.breakdown, r.status) for r in got] == [(r.reward, r.breakdown, r.status) for r in want]
    assert got[4].status == "error" and "gold answer" in got[4].error  # raw: no policy applied


def test_get_describes_the_endpoint(endpoints):
    info = get(endpoints["reward"])
    assert info["kind"] == "reward" and [f["name"] for f in info["functions"]] == ["math", "format"]


@pytest.mark.parametrize(
    "body,message",
    [
        (b"not json", "request body is not JSON"),
        ({"items": []}, 'expected a JSON object {"samples": [...]}'),
        ({"samples": [{"response": "x", "completion": "y"}]}, "samples[0]: unknown key(s) ['completion']"),
        ({"samples": [{"prompt": "x"}]}, "samples[0]: 'response' must be a string"),
    ],
)
def test_bad_requests_get_400_with_the_reason(endpoints, body, message):
    status, answer = post(endpoints["reward"], body)
    assert status == 400 and message in answer["error"]


def test_pool_calls_the_endpoint_as_a_reward(endpoints):
    from qwen25_rl.reward.pool import RewardPool

    cfg = RewardConfig.model_validate(
        {
            "functions": [{"type": "reward_model", "name": "remote", "params": {"url": endpoints["reward"], "batch_size": 2}}],
            "pool": {"num_workers": 1, "num_cpus_per_worker": 0.5, "on_failure": "drop_group"},
        }
    )
    samples = math_samples()
    with RewardPool(cfg, name_prefix="test/remote") as pool:
        results = pool.score(samples)
    assert [r.breakdown.get("remote") for r in results[:4]] == pytest.approx([1.1, 1.0, 1.1, 0.0])
    # The server's per-sample error comes through as an error, and the pool's policy applies.
    assert results[4].status == "error" and "served reward at" in results[4].error and results[4].dropped


def test_reward_model_endpoint_matches_an_unbatched_forward(endpoints, rm_dir):
    """A one-output checkpoint (no reward_model.json): its output is the reward, under the key of
    its one criterion, on the sequence the RM is trained on (the prompt as a user turn with the
    assistant turn opened by the RM's own chat template, then the response and EOS)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    samples = [
        RewardSample("Paris.", prompt="Capital of France?"),
        RewardSample("It is 4, because 2 + 2 = 4 and nothing else changes that. " * 3, prompt="2+2?"),
        RewardSample("", prompt="Say nothing."),
        RewardSample("def f():\n    return 1\n", prompt="Write f."),
        RewardSample("ok", prompt=""),
    ]
    status, body = post(endpoints["rm"], {"samples": [s.to_dict() for s in samples]})
    assert status == 200 and all(r["status"] == "ok" for r in body["results"])
    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    for s, r in zip(samples, body["results"]):
        prompt = tok.apply_chat_template([{"role": "user", "content": s.prompt}], tokenize=False, add_generation_prompt=True)
        ids = tok.encode(prompt, add_special_tokens=False) + tok.encode(s.response, add_special_tokens=False) + [tok.eos_token_id]
        with torch.inference_mode():
            want = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        assert r["reward"] == pytest.approx(want, abs=1e-4)
        assert r["breakdown"] == {"reward": r["reward"]}
    info = get(endpoints["rm"])
    assert info["criteria"] == ["reward"] and info["weights"] == {"reward": 1.0}


def rm_samples() -> list[RewardSample]:
    """Lengths in no order, one far past RM_MAX_LENGTH tokens."""
    return [
        RewardSample("It is 4, because 2 + 2 = 4.", prompt="2+2?"),
        RewardSample("Paris.", prompt="Capital of France?"),
        RewardSample("a long answer that goes on and on " * 12, prompt="Tell me everything."),
        RewardSample("", prompt="Say nothing."),
        RewardSample("def f():\n    return 1\n", prompt="Write f."),
        RewardSample("ok", prompt=""),
    ]


def test_multi_criterion_rm_endpoint_gives_the_rl_scorers_numbers(endpoints, rm3_dir):
    """reward = the combined score, breakdown = one score per criterion, equal to what
    RewardModelScorer (the RM workers' path) gives for the same samples, in request order; the
    over-long sample is scored on its end and counted."""
    from qwen25_rl.reward.learned import RewardModelScorer

    samples = rm_samples()
    before = get(endpoints["rm3"])
    assert before["criteria"] == CRITERIA and before["weights"] == WEIGHTS and before["max_length"] == RM_MAX_LENGTH
    status, body = post(endpoints["rm3"], {"samples": [s.to_dict() for s in samples]})
    assert status == 200 and [r["status"] for r in body["results"]] == ["ok"] * len(samples)

    scorer = RewardModelScorer(rm3_dir)
    assert [len(scorer.token_ids(s.prompt, s.response)) > RM_MAX_LENGTH for s in samples] == [False, False, True, False, False, False]
    want = scorer.score([s.prompt for s in samples], [s.response for s in samples])
    assert want.truncated == 1
    got = body["results"]
    assert [r["reward"] for r in got] == pytest.approx(want.combined.tolist(), abs=1e-5)
    for r, row in zip(got, want.scores.tolist()):
        assert list(r["breakdown"]) == CRITERIA
        assert list(r["breakdown"].values()) == pytest.approx(row, abs=1e-5)
        assert r["reward"] == pytest.approx(sum(WEIGHTS[c] * r["breakdown"][c] for c in CRITERIA), abs=1e-5)
    assert len({round(r["reward"], 4) for r in got}) == len(samples)  # distinct samples, distinct rewards: order is checked
    after = get(endpoints["rm3"])["stats"]
    assert after["truncated"] - before["stats"]["truncated"] == 1
    assert after["samples"] - before["stats"]["samples"] == len(samples)


def test_a_failing_rm_batch_gives_per_sample_errors(rm3_dir, monkeypatch):
    """The backend of a served RM, in process: a batch whose scoring raises comes back as one
    error result per sample (nothing becomes 0) and the next batch is scored."""
    from qwen25_rl.reward.serve import _ModelBackend

    backend = _ModelBackend(RewardModelServeConfig(path=str(rm3_dir)), num_threads=1)
    samples = rm_samples()[:3]
    real = backend.scorer.score

    def boom(prompts, responses):
        raise RuntimeError("boom")

    monkeypatch.setattr(backend.scorer, "score", boom)
    results, counts = backend.score(samples)
    assert [(r.reward, r.status) for r in results] == [(None, "error")] * 3 and counts == {}
    assert all("reward model failed: RuntimeError: boom" in r.error for r in results)
    monkeypatch.setattr(backend.scorer, "score", real)
    results, counts = backend.score(samples)
    assert [r.status for r in results] == ["ok"] * 3 and counts == {"truncated": 1}


def test_a_causal_lm_folder_is_refused_at_deploy(tiny_model_dir):
    from qwen25_rl.reward.serve import deploy

    with pytest.raises(UserPathError, match=rf"{tiny_model_dir} has no score head"):
        deploy(ServeConfig(app_name="lm", route_prefix="/lm", port=_port()), rm_cfg=RewardModelServeConfig(path=str(tiny_model_dir)))


def test_concurrent_requests_are_scored_in_shared_batches(endpoints):
    sample = RewardSample("a fine answer", prompt="q").to_dict()
    before = get(endpoints["rm"])["stats"]
    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(lambda _: post(endpoints["rm"], {"samples": [sample]}), range(32)))
    assert all(status == 200 for status, _ in answers)
    values = {round(body["results"][0]["reward"], 5) for _, body in answers}
    assert len(values) == 1  # the same sample gets the same reward whatever batch it landed in
    stats = get(endpoints["rm"])["stats"]
    assert stats["samples"] - before["samples"] == 32
    assert stats["batches"] - before["batches"] < 32 and stats["largest_batch"] > 1
