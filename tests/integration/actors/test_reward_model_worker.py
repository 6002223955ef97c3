"""RewardModelWorker groups on Ray: scores joined to samples by id (not position), equal to the
one scoring path in-process (qwen25_rl.reward.learned), with the RM's own tokenizer and chat
template when they differ from the policy's."""

from __future__ import annotations

import time

import pytest
import torch
from bounds import SLACK_S

from qwen25_rl.actors.deadlines import WorkerHung
from qwen25_rl.actors.reward_model import RewardModelGroup, RMSample
from qwen25_rl.reward.learned import RewardModelScorer

CRITERIA = ["helpfulness", "conciseness"]


@pytest.fixture(scope="module")
def rm_with_its_own_tokenizer(tmp_path_factory):
    """An RM whose tokenizer is not the policy's (another vocabulary, trained on other text)."""
    from qwen25_rl.models import build_model
    from qwen25_rl.models.reward_model import save_new_reward_model
    from qwen25_rl.models.tokenizer import build_tokenizer, builtin_corpus

    root = tmp_path_factory.mktemp("rm_tok")
    tok = build_tokenizer(builtin_corpus(max_chars=60_000)[::-1], vocab_size=700)
    base = build_model("tiny", tokenizer=tok, seed=5)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    save_new_reward_model(root / "rm", root / "base", tok, CRITERIA, {"helpfulness": 1.0, "conciseness": 0.25}, max_length=96, seed=1)
    return root / "rm"


def samples() -> list[RMSample]:
    texts = ["5", "The answer is 5.", "I can't help with that.", "We compute 2 + 3, which gives 5. The final answer is 5." * 4]
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "what is 2 + 3?"}]
    out = [RMSample(f"s{i}", "what is 2 + 3?", t) for i, t in enumerate(texts)]
    return out + [RMSample("chat", chat, "5")]


@pytest.fixture(scope="module")
def group(local_ray, rm_with_its_own_tokenizer):
    g = RewardModelGroup(str(rm_with_its_own_tokenizer), name="t/rm", num_workers=2, num_cpus=0.5, micro_batch_size=2)
    yield g
    g.shutdown()


def test_worker_scores_equal_the_in_process_scorer_joined_by_sample_id(group, rm_with_its_own_tokenizer, tiny_tokenizer):
    batch = samples()
    got = group.score(batch[::-1])  # any order: the scores come back by sample id
    assert got.criteria == CRITERIA and set(got.by_id) == {s.sample_id for s in batch}
    assert got.truncated == 1  # the long response is over the RM's 96 tokens
    scorer = RewardModelScorer(rm_with_its_own_tokenizer)
    want = scorer.score([s.prompt for s in batch], [s.response for s in batch])
    for i, s in enumerate(batch):
        scores, combined = got.by_id[s.sample_id]
        torch.testing.assert_close(torch.tensor(scores), want.scores[i], rtol=0, atol=1e-5)
        assert combined == pytest.approx(float(want.combined[i]), abs=1e-5)
    # The RM tokenised with its own vocabulary and template, not the policy's.
    policy_prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "what is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    assert scorer.token_ids("what is 2 + 3?", "5") != tiny_tokenizer.encode(policy_prompt + "5")


def test_a_sample_id_given_twice_is_an_error_naming_it(group):
    with pytest.raises(RuntimeError, match="sample 's1' was scored twice"):
        group.score([RMSample("s1", "a", "b"), RMSample("s1", "a", "c")])


def test_a_hung_reward_model_worker_fails_by_the_score_deadline_naming_it(local_ray, rm_with_its_own_tokenizer, tmp_path, monkeypatch):
    # The workers' fault seam (qwen25_rl.actors.base.inject_fault): the first `score` call sleeps forever.
    monkeypatch.setenv("QWEN25_RL_FAULT_INJECT", f"reward_model:score:hang:1:{tmp_path / 'fault'}")
    g = RewardModelGroup(str(rm_with_its_own_tokenizer), name="t/rm-hung", num_workers=1, num_cpus=0.5, score_timeout_s=3.0)
    try:
        start = time.monotonic()
        with pytest.raises(WorkerHung, match=r"RewardModelWorker rank 0 \(t/rm-hung-0.*did not return from score\(\) during reward model"):
            g.score(samples())
        assert time.monotonic() - start < 3.0 + 20 + SLACK_S  # the deadline, then the stack dump
    finally:
        g.shutdown()
