"""`make demo`: the most complete real thing the project does end to end, on 2 CPU cores.

Today: build a tiny Qwen2-architecture model with a freshly trained byte-level BPE tokenizer
(Qwen2.5 control tokens, ChatML), save it in Hugging Face format, load it into vLLM (CPU
build) in this process and sample chat completions. Later stages extend this recipe.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process: fast start
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default reserves most of RAM
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(out_dir: str = "runs/demo") -> int:
    from qwen25_rl.models import build_model, count_parameters, get_preset, save_pretrained
    from qwen25_rl.models.tokenizer import build_tokenizer, builtin_corpus

    out = Path(out_dir)
    t0 = time.time()
    print("[1/2] training a byte-level BPE tokenizer and building the tiny Qwen2 model ...")
    tokenizer = build_tokenizer(builtin_corpus(), vocab_size=4096, model_max_length=2048)
    model = build_model("tiny", tokenizer=tokenizer, seed=0)
    path = save_pretrained(model, tokenizer, out / "model")
    n = sum(p.numel() for p in model.parameters())
    print(f"      {path}: {n:,} parameters ({count_parameters(get_preset('tiny')):,} at the preset vocab), vocab {len(tokenizer)}, {time.time() - t0:.1f}s")

    print("[2/2] serving it with vLLM (CPU) and sampling chat completions ...")
    from vllm import LLM, SamplingParams

    t1 = time.time()
    llm = LLM(model=str(path), dtype="float32", max_model_len=512, enforce_eager=True, seed=0)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ["What is 12 + 30?", "Write a Python function that adds two numbers.", "Name a prime number."]
    ]
    # No per-request seed: one seed shared by all requests would correlate their samples.
    params = SamplingParams(n=2, max_tokens=24, temperature=1.0, logprobs=0)
    results = llm.generate(prompts, params, use_tqdm=False)
    for prompt, res in zip(prompts, results):
        print(f"      prompt: {prompt.splitlines()[-2]!r}")
        for o in res.outputs:
            print(f"        -> {o.text!r} (mean log-prob {o.cumulative_logprob / max(len(o.token_ids), 1):.2f})")
    print(f"      vLLM start + generation {time.time() - t1:.1f}s. The model is untrained: the text is noise until pretraining/SFT/RL stages run.")
    print(f"done in {time.time() - t0:.1f}s; model folder: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
