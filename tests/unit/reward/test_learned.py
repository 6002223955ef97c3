"""Reading and scoring a reward-model folder (qwen25_rl.reward.learned): criteria and weights,
clear errors for folders that are not RMs, and the one scoring path the RM workers and the
Serve endpoint share: the training tokenisation, length-sorted batches, truncation counted."""

from __future__ import annotations

import json

import pytest
import torch

from qwen25_rl.errors import UserPathError
from qwen25_rl.models.reward_model import save_new_reward_model
from qwen25_rl.reward.learned import RM_FILE, RewardModelInfo, RewardModelScorer, combined_scores, load_reward_model, read_info

CRITERIA = ["truthfulness", "conciseness", "harmlessness"]


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "rm"
    save_new_reward_model(out, tiny_model_dir, tiny_tokenizer, CRITERIA, {"truthfulness": 1.0, "conciseness": 0.5}, max_length=64, seed=3)
    return out


def test_a_padded_batch_scores_each_row_as_alone(rm_dir, tiny_tokenizer):
    """The score is read at each row's last real token: right padding changes nothing."""
    model, info = load_reward_model(rm_dir)
    texts = ["one two three four five", "six"]
    batch = tiny_tokenizer(texts, padding=True, return_tensors="pt", padding_side="right")
    with torch.no_grad():
        together = model(**batch).logits
        alone = [model(**tiny_tokenizer([t], return_tensors="pt")).logits[0] for t in texts]
    assert together.shape == (2, 3)
    for i in range(2):
        torch.testing.assert_close(together[i], alone[i], rtol=0, atol=1e-5)
    assert info.criteria == CRITERIA and info.weights == {"truthfulness": 1.0, "conciseness": 0.5}


def test_combined_score_is_the_weighted_sum_of_criteria():
    scores = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]])
    info = RewardModelInfo(criteria=CRITERIA, weights={"truthfulness": 1.0, "conciseness": 0.5}, max_length=8)
    assert combined_scores(scores, info.weight_vector()).tolist() == [2.0, -1.0]


def test_a_causal_lm_folder_is_named_as_having_no_score_head(tiny_model_dir):
    with pytest.raises(UserPathError, match=rf"{tiny_model_dir} has no score head: its model is Qwen2ForCausalLM"):
        read_info(tiny_model_dir)


def test_weights_naming_an_unknown_criterion_are_an_error(rm_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(rm_dir, bad)
    data = json.loads((bad / RM_FILE).read_text())
    data["weights"]["fluency"] = 1.0
    (bad / RM_FILE).write_text(json.dumps(data))
    with pytest.raises(UserPathError, match=r"weights name criteria \['fluency'\]"):
        read_info(bad)


def test_the_scorer_builds_the_sequence_the_rm_was_trained_on(rm_dir, tiny_tokenizer, tmp_path):
    from qwen25_rl.data.pairs import load_pairs

    rows = tmp_path / "pairs.jsonl"
    rows.write_text(json.dumps({"prompt": "what is 2 + 3?", "chosen": "2 + 3 = 5", "rejected": "no"}) + "\n")
    (pair,), _ = load_pairs([str(rows)], tiny_tokenizer)
    scorer = RewardModelScorer(rm_dir)
    assert scorer.token_ids("what is 2 + 3?", "2 + 3 = 5") == pair.prompt_ids + pair.chosen_ids


def test_scores_do_not_depend_on_batching_or_order(rm_dir):
    prompts = ["what is 2 + 3?", "say hi", "what is 9 - 4? answer with a number please"]
    responses = ["5", "hello there, how are you doing today?", "5"]
    one_by_one = RewardModelScorer(rm_dir, micro_batch_size=1)
    batched = RewardModelScorer(rm_dir, micro_batch_size=3)
    a = one_by_one.score(prompts, responses)
    b = batched.score(prompts[::-1], responses[::-1])
    torch.testing.assert_close(a.scores, b.scores.flip(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(a.combined, combined_scores(a.scores, torch.tensor([1.0, 0.5, 0.0])))
    assert a.truncated == 0 and a.scores.shape == (3, 3)


def test_a_sample_longer_than_the_limit_is_cut_from_the_left_and_counted(rm_dir):
    limit = len(RewardModelScorer(rm_dir).token_ids("count", "one")) + 2
    scorer = RewardModelScorer(rm_dir, max_length=limit)
    long = "one two three four five six seven eight nine ten " * 3
    out = scorer.score(["count", "count"], [long, "one"])
    assert out.truncated == 1
    ids = scorer.token_ids("count", long)[-limit:]
    with torch.no_grad():
        alone = scorer.model(input_ids=torch.tensor([ids])).logits[0]
    torch.testing.assert_close(out.scores[0], alone, rtol=0, atol=1e-5)


def test_a_folder_without_a_chat_template_needs_template_plain(rm_dir, tmp_path):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(rm_dir, plain)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(UserPathError, match="has no chat template"):
        RewardModelScorer(plain)
    assert RewardModelScorer(plain, template="plain").score(["a"], ["b"]).scores.shape == (1, 3)
