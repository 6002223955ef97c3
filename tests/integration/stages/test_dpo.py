"""`qwen25-rl dpo` end to end on a local Ray, each run in its own process (as a user runs it).

- rejection sampling rounds on vLLM: pairs written per round, reference log-probs taken from
  the sampler where it is the reference and equal to the reference workers' own;
- a pair file: stored reference log-probs give the same steps as online ones; a round's own
  pair file trains again in `pairs` mode;
- resume in the middle of a round matches the uninterrupted run;
- bad input: clear messages naming the row or key, nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

CONFIG = str(REPO_ROOT / "configs" / "tiny" / "dpo.yaml")
# Summed log-probs of a response (<= 16 tokens), sampler (vLLM, float32) vs reference workers:
# per token ~1e-6 on CPU, so 1e-3 on a sum leaves room without hiding a wrong model.
SUM_LOGPROB_TOL = 1e-3


def dpo_overrides(model_dir, task_dir, out_dir, run_name: str, **extra) -> list[str]:
    """configs/tiny/dpo.yaml on the toy digit task: graded rewards, so best_vs_worst pairs form."""
    base = {
        "model.path": str(model_dir),
        "data.train_files": f"[{task_dir / 'train.jsonl'}]",
        "data.eval_files": "[]",
        "data.prompt_key": "prompt",
        "reward.functions": "[{type: custom, name: digits, params: {path: '"
        + str(task_dir / "digit_reward.py")
        + ":digit_fraction', isolation: thread}}]",
        "reward.pool.num_workers": 1,
        "reward.pool.num_cpus_per_worker": 0.25,
        "rollout.engine": "hf",
        "rollout.samples_per_prompt": 4,
        "rollout.max_new_tokens": 16,
        "rollout.max_model_len": 256,
        "policy.strategy": "ddp",
        "policy.micro_batch_size": 8,
        "algorithm.rounds": 1,
        "algorithm.prompts_per_round": 16,
        "algorithm.pairs_per_step": 4,
        "algorithm.pairing.rule": "best_vs_worst",
        "algorithm.pairing.prefer_shorter": False,
        "algorithm.pairing.pairs_per_prompt": 1,
        "algorithm.rpo_alpha": 0.0,
        "algorithm.reference": "initial",
        "optimizer.lr": 1.0e-3,
        "eval.at_start": False,
        "checkpoint.every_n_steps": "null",
        "logging.output_dir": str(out_dir),
        "logging.run_name": run_name,
        "logging.tensorboard": False,
        "ray.num_cpus": 4,
        "ray.include_dashboard": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def dpo(overrides: list[str], *, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "dpo", "--config", CONFIG, *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def dpo_in_process(overrides: list[str], capsys) -> tuple[int, str]:
    from qwen25_rl.cli import main

    rc = main(["dpo", "--config", CONFIG, *overrides])
    return rc, capsys.readouterr().err


def reference_sums(model_dir, pair_file) -> list[tuple[float, float]]:
    """Summed log-probs of every pair's responses, by a ReferenceWorker in this process."""
    from qwen25_rl.actors.policy import ReferenceWorker
    from qwen25_rl.data.pairs import load_pairs, pair_batch
    from qwen25_rl.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    pairs, _ = load_pairs([str(pair_file)], tok, vocab_size=vocab)
    worker = ReferenceWorker(str(model_dir), torch_threads=1)
    worker.init_model()
    out = worker.pair_log_probs(pair_batch(pairs, tok.pad_token_id))
    return list(zip(out["chosen_logps"].tolist(), out["rejected_logps"].tolist()))


def stored_sums(pair_file) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in pair_file.read_text().splitlines()]
    return [(r["ref_chosen_logp"], r["ref_rejected_logp"]) for r in rows]


@pytest.mark.slow
@pytest.mark.vllm
def test_sampled_rounds_store_pairs_with_the_samplers_reference_log_probs(tiny_model_dir, digit_task, tmp_path):
    """Two rounds on vLLM with reference: previous_round, so the sampler IS the reference in
    both: its log-probs are used (after the check) and equal the reference workers' own."""
    dpo(
        dpo_overrides(
            tiny_model_dir,
            digit_task,
            tmp_path,
            "rounds",
            **{"rollout.engine": "vllm", "policy.strategy": "deepspeed", "algorithm.rounds": 2, "algorithm.reference": "previous_round"},
        )
    )
    run = tmp_path / "rounds"
    rows = read_metrics(run / "metrics.jsonl")
    firsts = [r for r in rows if "round/pairs" in r]
    assert [r["round"] for r in firsts] == [0, 1]
    for r in firsts:
        assert r["reference/from_sampler"] == 1.0 and r["reference/sampler_gap_abs_max"] < 1e-3, r
        assert r["round/pairs"] > 0 and r["round/groups"] == 16
        assert r["round/pairs"] + sum(v for k, v in r.items() if k.startswith("round/dropped/") and "samples" not in k) >= 16
        for key in ("time/sample_s", "time/reward_s", "time/pairing_s", "time/reference_s", "round/reward/mean"):
            assert key in r, key
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1]["policy_version"] == 2
    for key in (
        "dpo/loss",
        "dpo/reward_accuracy",
        "dpo/reward_margin",
        "dpo/logps/chosen_minus_ref",
        "dpo/logps/rejected_minus_ref",
        "tokens_per_s",
    ):
        assert key in rows[-1], key
    # Round 0 sampled from the starting model, round 1 from the policy after round 0 (saved as
    # the round's reference): the stored sums are that model's log-probs of the pair tokens.
    for round_, model in ((0, tiny_model_dir), (1, run / "rounds" / "round_1" / "reference_model")):
        pair_file = run / "rounds" / f"round_{round_}" / "pairs.jsonl"
        for stored, ref in zip(stored_sums(pair_file), reference_sums(model, pair_file)):
            assert stored == pytest.approx(ref, abs=SUM_LOGPROB_TOL)
    assert (run / "final" / "model.safetensors").is_file()

    # A round's pair file is a pair file: `pairs` mode trains on it with its stored reference.
    round_0 = run / "rounds" / "round_0" / "pairs.jsonl"
    dpo(dpo_overrides(tiny_model_dir, digit_task, tmp_path, "again", **{"data.mode": "pairs", "data.train_files": f"[{round_0}]"}))
    again = read_metrics(tmp_path / "again" / "metrics.jsonl")
    assert "time/reference_s" not in again[0], "the stored reference log-probs were computed again"
    # The file's reference is the starting model, which the policy still is at step 1: h = 0.
    assert again[0]["dpo/loss/preference"] == pytest.approx(math.log(2), abs=1e-4)


def test_stored_reference_log_probs_give_the_same_steps_as_online_ones(local_ray, tiny_model_dir, digit_task, tmp_path, capsys):
    """A user's pair file (text and chat rows): stored (one reference pass, kept in the round's
    pair file) vs online (a reference pass every step). No rollout engine is started."""
    pairs = tmp_path / "pairs.jsonl"
    rows = []
    for i in range(12):
        prompt = f"count {i} stones" if i % 2 else [{"role": "user", "content": f"write {i} numbers"}]
        chosen = f"{i} {i + 1} {i + 2}" if i % 3 else [{"role": "assistant", "content": f"{i}{i}{i}"}]
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": f"river stone {i}"})
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = {}
    for mode in ("stored", "online"):
        # In this process, on the session's Ray: no interpreter or cluster start per run.
        rc, err = dpo_in_process(
            dpo_overrides(
                tiny_model_dir,
                digit_task,
                tmp_path,
                mode,
                **{"data.mode": "pairs", "data.train_files": f"[{pairs}]", "algorithm.reference_mode": mode, "algorithm.rpo_alpha": 0.5},
            ),
            capsys,
        )
        assert rc == 0, err[-3000:]
        runs[mode] = read_metrics(tmp_path / mode / "metrics.jsonl")
    assert len(runs["stored"]) == len(runs["online"]) == 3
    for a, b in zip(runs["stored"], runs["online"]):
        for key in ("dpo/loss", "dpo/reward_margin", "dpo/logps/chosen_minus_ref", "policy/grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    assert runs["stored"][0]["reference/from_sampler"] == 0.0
    stored = stored_sums(tmp_path / "stored" / "rounds" / "round_0" / "pairs.jsonl")
    assert len(stored) == 12 and all(c < 0 and r < 0 for c, r in stored)


@pytest.mark.slow
def test_a_run_killed_mid_round_resumes_to_the_same_metrics(tiny_model_dir, digit_task, tmp_path):
    common = {"algorithm.prompts_per_round": 16, "algorithm.pairs_per_step": 2, "checkpoint.every_n_steps": 2, "algorithm.rounds": 2}
    dpo(dpo_overrides(tiny_model_dir, digit_task, tmp_path, "straight", **common))
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    assert len(straight) > 4

    args = [
        sys.executable,
        "-m",
        "qwen25_rl",
        "dpo",
        "--config",
        CONFIG,
        *dpo_overrides(tiny_model_dir, digit_task, tmp_path, "killed", **common),
    ]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = tmp_path / "killed" / "checkpoints" / "step_2" / "COMPLETE"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run never reached its step-2 checkpoint"
    state = json.loads((tmp_path / "killed" / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    assert state["round"] == 0 and state["step_in_round"] == 2, "the checkpoint is not in the middle of a round"

    dpo(dpo_overrides(tiny_model_dir, digit_task, tmp_path, "killed", **common))
    resumed = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]
    for a, b in zip(straight[2:], resumed[2:]):
        for key in ("dpo/loss", "dpo/reward_margin", "policy/grad_norm", "policy_version"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
        if "round/pairs" in a:  # round 1 sampled the same pairs from the same weights
            assert a["round/pairs"] == b["round/pairs"] and a["round/reward/mean"] == pytest.approx(b["round/reward/mean"], abs=1e-6)


def test_a_round_that_forms_no_pairs_stops_with_the_causes(local_ray, tiny_model_dir, digit_task, tmp_path, capsys):
    import ray

    constant = tmp_path / "constant.py"
    constant.write_text("def same(sample):\n    return 0.5\n")
    reward = "[{type: custom, name: same, params: {path: '" + str(constant) + ":same', isolation: thread}}]"
    rc, err = dpo_in_process(dpo_overrides(tiny_model_dir, digit_task, tmp_path, "nopairs", **{"reward.functions": reward}), capsys)
    assert rc == 2, err[-3000:]
    assert "round 0 formed no pairs from 16 prompts x 4 samples (dropped all_tied: 16)" in err
    assert "Traceback" not in err
    assert ray.util.placement_group_table() == {} or all(pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values()), (
        "the stopped run left worker groups behind"
    )
    assert not (tmp_path / "nopairs" / "rounds" / "round_0" / "pairs.jsonl").exists()
    assert not (tmp_path / "nopairs" / "final").exists()


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical"),
        ({"prompt": "p", "chosen": "yes"}, "'rejected'"),
    ],
    ids=["identical", "missing-field"],
)
def test_a_bad_pair_row_is_named_and_leaves_no_run_folder(tiny_model_dir, digit_task, tmp_path, capsys, row, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(row) + "\n")
    overrides = dpo_overrides(tiny_model_dir, digit_task, tmp_path, "bad", **{"data.mode": "pairs", "data.train_files": f"[{pairs}]"})
    rc, err = dpo_in_process(overrides, capsys)
    assert rc == 2 and f"{pairs}:2" in err and message in err and "Traceback" not in err, err
    assert not (tmp_path / "bad").exists()


def test_long_pairs_are_dropped_or_truncated_and_counted(tiny_model_dir, digit_task, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    long = " ".join(["stone"] * 200)
    pairs.write_text("".join(json.dumps({"prompt": "p", "chosen": c, "rejected": "b"}) + "\n" for c in ("a", long, "c")))
    overrides = dpo_overrides(
        tiny_model_dir, digit_task, tmp_path, "long", **{"data.mode": "pairs", "data.train_files": f"[{pairs}]", "data.max_length": 64}
    )
    rc, err = dpo_in_process([*overrides, "data.on_long_pair=error"], capsys)
    assert rc == 2 and f"{pairs}:2" in err and "max_length" in err, err
    assert not (tmp_path / "long").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer.name=onties"], "optimizer.name 'onties' needs optimizer.base_model"),
        (["algorithm.rounds=2", "data.mode=pairs"], "algorithm.rounds > 1 needs data.mode: sample"),
        (["algorithm.loss_type=kto"], "algorithm.loss_type 'kto' is not a registered DPO loss"),
    ],
    ids=["onties-without-base", "rounds-on-a-pair-file", "unknown-loss"],
)
def test_inconsistent_settings_are_named_at_load(capsys, overrides, message):
    rc, err = dpo_in_process(overrides, capsys)
    assert rc == 2 and message in err and "Traceback" not in err, err
