"""The tiny pretrain -> SFT chain through the CLI (Ray Train + DeepSpeed ZeRO-2 on CPU).

One run of each stage per session (the `chain` fixture, tests/arithmetic_chain.py), derived from
configs/tiny/*.yaml with smaller budgets;
each test checks one property of what they wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from arithmetic_chain import LONG_STEPS, PRETRAIN_STEPS

from qwen25_rl.data import parse_final_answer
from qwen25_rl.data.synthetic import ARITHMETIC_DOC_PROMPT
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _rows(run: Path) -> list[dict]:
    return read_metrics(run / "metrics.jsonl")


def test_long_context_phase_raises_rope_base_and_context_in_saved_config(chain):
    final = json.loads((chain / "runs" / "tiny-pretrain" / "final" / "config.json").read_text())
    init = json.loads((chain / "runs" / "tiny-pretrain" / "initial_model" / "config.json").read_text())
    assert init["rope_parameters"]["rope_theta"] == 10_000.0
    assert final["rope_parameters"]["rope_theta"] == 1_000_000.0
    assert final["max_position_embeddings"] == 4096 != init["max_position_embeddings"]
    meta = json.loads((chain / "runs" / "tiny-pretrain" / "data" / "long_context" / "train" / "meta.json").read_text())
    assert meta["seq_len"] == 512
    phases = [r.get("phase") for r in _rows(chain / "runs" / "tiny-pretrain") if "loss" in r]
    assert phases == ["general"] * PRETRAIN_STEPS + ["long_context"] * LONG_STEPS


def test_pretraining_lowers_heldout_loss(chain):
    evals = [r["eval_loss"] for r in _rows(chain / "runs" / "tiny-pretrain") if "eval_loss" in r]
    assert evals[-1] < evals[0] - 1.0, evals


def test_sft_lowers_heldout_loss(chain):
    evals = [r["eval_loss"] for r in _rows(chain / "runs" / "tiny-sft") if "eval_loss" in r]
    # evals[0] is the pretrained model on the held-out conversations, before any SFT step.
    assert evals[-1] < evals[0] - 0.2, evals


def _accuracy(model_dir: Path, problems: list[dict], chat: bool) -> tuple[float, list[str]]:
    import torch

    from qwen25_rl.models import load_model, load_tokenizer

    tok = load_tokenizer(model_dir, padding_side="left")
    model = load_model(model_dir).eval()
    if chat:
        prompts = [
            tok.apply_chat_template([{"role": "user", "content": p["question"]}], tokenize=False, add_generation_prompt=True)
            for p in problems
        ]
    else:  # the pretraining text's own framing: fair to a model that never saw ChatML
        prompts = [ARITHMETIC_DOC_PROMPT.format(question=p["question"]) for p in problems]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    stop = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=40, do_sample=False, eos_token_id=stop, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    # A pretrained model runs on into the next "Question:"; its answer is the first one.
    answers = [parse_final_answer(t.split("\n\n")[0]) for t in texts]
    right = sum(a is not None and a == parse_final_answer(p["answer"]) for a, p in zip(answers, problems))
    return right / len(problems), texts


def test_sft_model_answers_heldout_arithmetic_better_than_the_pretrained_one(chain):
    problems = [json.loads(line) for line in (chain / "data" / "arithmetic_heldout.jsonl").read_text().splitlines()]
    pre_acc, pre_texts = _accuracy(chain / "runs" / "tiny-pretrain" / "final", problems, chat=False)
    sft_acc, sft_texts = _accuracy(chain / "runs" / "tiny-sft" / "final", problems, chat=True)
    print(f"held-out arithmetic accuracy: pretrained {pre_acc:.2f}, SFT {sft_acc:.2f}")
    print("pretrained:", pre_texts[:2], "\nsft:", sft_texts[:2])
    # Seen on 2 cores (Nov 2026): pretrained 0.14, SFT 0.35 (a plain-loop rerun: 0.09 / 0.35).
    # The pretrained model is not at zero (it learned the format and some sums from the
    # corpus), so the margin is a real gain from SFT, with room for run-to-run noise.
    assert sft_acc >= pre_acc + 0.1, (pre_acc, sft_acc)
    assert sft_acc >= 0.25, sft_acc


def test_final_folders_are_complete_hf_checkpoints(chain):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for run in ("tiny-pretrain", "tiny-sft"):
        final = chain / "runs" / run / "final"
        model = AutoModelForCausalLM.from_pretrained(final, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(final, local_files_only=True)
        assert model.config.vocab_size >= len(tok)
        assert "{% generation %}" in tok.chat_template or "generation -%}" in tok.chat_template
        assert not any((final / name).exists() for name in ("deepspeed", "optimizer.pt", "trainer_state.json"))
        assert model.generation_config.eos_token_id == [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]


VLLM_PROMPT_LOGPROBS = textwrap.dedent(
    """
    import json, os, sys
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=512, enforce_eager=True, seed=0)
    out = llm.generate([sys.argv[2]], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    lps = [None if d is None else d[t].logprob for d, t in zip(out.prompt_logprobs, out.prompt_token_ids)]
    print("RESULT " + json.dumps({"ids": list(out.prompt_token_ids), "logprobs": lps}))
    """
)


@pytest.mark.vllm
def test_vllm_loads_the_sft_model_with_the_same_weights_and_rope(chain):
    import torch

    from qwen25_rl.models import load_model, load_tokenizer

    final = chain / "runs" / "tiny-sft" / "final"
    tok = load_tokenizer(final)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Anna has 7 apples. She gets 5 more apples. How many apples does Anna have now?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    proc = subprocess.run([sys.executable, "-c", VLLM_PROMPT_LOGPROBS, str(final), prompt], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    ids = torch.tensor([result["ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(load_model(final)(input_ids=ids).logits[0].double(), -1)
    hf = [logp[i - 1, t].item() for i, t in enumerate(result["ids"]) if i > 0]
    # The long-context RoPE base (1e6) must reach vLLM too: a wrong base changes these.
    assert result["logprobs"][1:] == pytest.approx(hf, abs=2e-3)
