"""Rollout engines and the `RolloutWorker` actor that hosts one.

Two registered engines share one interface and one test suite:

- `vllm`: a vLLM engine living in the actor's own process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`),
  so start-up is seconds and its weights are reachable for in-place reloads;
- `hf`: `transformers.generate`, for environments without vLLM.

Both return, per completion, the sampled token ids, the text, the finish reason and the
sampler's log-probs of the sampled tokens under the distribution it sampled from
(temperature applied), which the trainer compares with its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from qwen25_rl.actors.base import DistributedWorker, inject_fault
from qwen25_rl.batch import TensorBatch


@dataclass
class SamplingSettings:
    """What to sample. `seed` set -> request i uses seed + i (reproducible, yet uncorrelated)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Completion:
    prompt_index: int
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" (an end token) or "length" (hit max_new_tokens)


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], settings: SamplingSettings) -> list[Completion]: ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None: ...


ROLLOUT_ENGINES: dict[str, Callable[..., RolloutEngine]] = {}


def register_rollout_engine(name: str):
    def deco(factory):
        ROLLOUT_ENGINES[name] = factory
        return factory

    return deco


def get_rollout_engine(name: str) -> Callable[..., RolloutEngine]:
    if name not in ROLLOUT_ENGINES:
        raise KeyError(f"unknown rollout engine {name!r}; registered: {', '.join(sorted(ROLLOUT_ENGINES))}")
    return ROLLOUT_ENGINES[name]


@register_rollout_engine("vllm")
class VLLMEngine:
    """vLLM in this process. On CPU the KV cache is a fixed number of GiB (`kv_cache_gib`),
    never a fraction of RAM that other workers also need."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        max_model_len: int = 1024,
        seed: int = 0,
        kv_cache_gib: int = 1,
        gpu_memory_utilization: float = 0.5,
        enable_prefix_caching: bool = True,
        cpu_threads: int | None = None,
        enforce_eager: bool | None = None,
    ):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        from qwen25_rl.logs import follow_vllm_logging, quiet_third_party

        quiet_third_party()  # before vLLM's import reads VLLM_LOGGING_LEVEL
        import torch
        from vllm import LLM

        quiet_third_party()  # and after it: vLLM's own handler exists now (known-harmless filter)
        follow_vllm_logging()  # and after each time the engine configures its logging again

        if cpu_threads is not None:
            # The engine computes with torch's intra-op (OpenMP) threads of this process, fixed
            # from here on: vLLM's CPU worker replaces torch.set_num_threads with a no-op. (Its
            # CPU binding, VLLM_CPU_OMP_THREADS_BIND, is applied only by the multiprocess
            # executor; an in-process engine's threads are not pinned.)
            torch.set_num_threads(cpu_threads)

        # vLLM splits a prompt that does not fit the step's token budget over several steps
        # (chunked prefill) and then rewinds the request's seeded generator, which only CUDA
        # generators can do ("CPU Generator does not use offset"). On CPU, prompts are
        # therefore scheduled whole, with a budget of at least one full-length sequence.
        chunked = torch.cuda.is_available()
        if enforce_eager is None:
            # Compiled (torch.compile; + CUDA graphs on GPU) unless on CPU, where compiling
            # costs ~25 s at engine start (~10 s from vLLM's cache) for ~30 % faster decode
            # steps of small models and nothing measurable on matmul-bound ones.
            enforce_eager = not torch.cuda.is_available()
        budget = {} if chunked else {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 8192)}
        self.llm = LLM(
            **budget,
            model=model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            # Log-probs of the distribution actually sampled from (after temperature), which
            # is what importance ratios against the trainer need.
            logprobs_mode="processed_logprobs",
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[list[int]], settings: SamplingSettings) -> list[Completion]:
        from vllm import SamplingParams

        def params(i: int) -> SamplingParams:
            return SamplingParams(
                n=settings.n,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k if settings.top_k > 0 else 0,
                max_tokens=settings.max_new_tokens,
                min_tokens=settings.min_new_tokens,
                stop_token_ids=list(settings.stop_token_ids) or None,
                logprobs=0,
                seed=None if settings.seed is None else settings.seed + i,
                # Text is decoded once per completion below: vLLM's per-step incremental
                # detokenisation of outputs and of each sampled token's log-prob entry costs
                # ~15 ms of Python per decode step at 128 sequences (a tenth of the step on CPU).
                detokenize=False,
            )

        outputs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], [params(i) for i in range(len(prompts))], use_tqdm=False
        )
        finished = [(i, o) for i, out in enumerate(outputs) for o in out.outputs]
        texts = self.tokenizer.batch_decode([list(o.token_ids) for _, o in finished], skip_special_tokens=True)
        completions = []
        for (i, o), text in zip(finished, texts):
            lps = [step[tok].logprob for step, tok in zip(o.logprobs or [], o.token_ids)]
            completions.append(Completion(i, list(o.token_ids), lps, text, "length" if o.finish_reason == "length" else "stop"))
        return completions

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        weights = list(weights)
        # The CPU backend repacks linear weights, so `model.load_weights` is wrong there;
        # `reload_weights` goes through the loader that knows the packing.
        self.llm.collective_rpc(_reload_weights, args=(weights,))
        # Cached prefixes hold keys/values of the old weights.
        self.llm.reset_prefix_cache()


def _reload_weights(worker, weights) -> None:
    worker.model_runner.reload_weights(weights_iterator=iter(weights))


@register_rollout_engine("hf")
class HFGenerateEngine:
    """`transformers.generate` with the same sampling semantics (temperature, top-p, top-k)."""

    def __init__(self, model_path: str, *, dtype: str = "float32", max_model_len: int = 1024, seed: int = 0, **_: Any):
        from qwen25_rl.models import load_model, load_tokenizer

        self.model = load_model(model_path, dtype=dtype).eval()
        self.tokenizer = load_tokenizer(model_path, padding_side="left")
        self.max_model_len = max_model_len
        self.seed = seed
        self._calls = 0
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.pad_id = self.tokenizer.pad_token_id

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], settings: SamplingSettings) -> list[Completion]:
        from transformers import GenerationConfig

        torch.manual_seed(settings.seed if settings.seed is not None else self.seed + self._calls)
        self._calls += 1
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            attn[i, width - len(p) :] = 1
        stop = list(dict.fromkeys(self.eos_ids + list(settings.stop_token_ids)))
        config = GenerationConfig(
            do_sample=settings.temperature > 0,
            temperature=settings.temperature if settings.temperature > 0 else None,
            top_p=settings.top_p,
            top_k=settings.top_k if settings.top_k > 0 else 0,  # 0 disables HF's default top-k of 50
            max_new_tokens=min(settings.max_new_tokens, self.max_model_len - width),
            min_new_tokens=settings.min_new_tokens,
            num_return_sequences=settings.n,
            eos_token_id=stop,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_scores=True,  # processed scores: after temperature / top-p / top-k
        )
        out = self.model.generate(input_ids=ids, attention_mask=attn, generation_config=config)
        new = out.sequences[:, width:]
        scores = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B*n, T, V]
        lps = scores.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        completions = []
        for row in range(new.shape[0]):
            toks = new[row].tolist()
            n_tok, reason = len(toks), "length"
            for j, t in enumerate(toks):
                if t in stop:
                    n_tok, reason = j + 1, "stop"
                    break
            toks = toks[:n_tok]
            completions.append(
                Completion(
                    row // settings.n, toks, lps[row, :n_tok].tolist(), self.tokenizer.decode(toks, skip_special_tokens=True), reason
                )
            )
        return completions

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        # state_dict names include tied weights (lm_head.weight) under their own key.
        params = self.model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, tensor in weights:
                if name not in params:
                    raise KeyError(f"rollout engine hf: no parameter named {name!r}")
                params[name].copy_(tensor)


def completions_to_batch(completions: list[Completion], prompts: list[list[int]], version: int, pad_id: int) -> TensorBatch:
    """Pack completions into a TensorBatch: left-padded prompts, right-padded responses."""
    n = len(completions)
    p_width = max((len(prompts[c.prompt_index]) for c in completions), default=0)
    r_width = max((len(c.token_ids) for c in completions), default=0)
    prompt_ids = torch.full((n, p_width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, p_width), dtype=torch.long)
    response_ids = torch.full((n, r_width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((n, r_width), dtype=torch.long)
    sampler_logprobs = torch.zeros((n, r_width), dtype=torch.float32)
    for i, c in enumerate(completions):
        p = prompts[c.prompt_index]
        if p:
            prompt_ids[i, p_width - len(p) :] = torch.tensor(p)
            prompt_mask[i, p_width - len(p) :] = 1
        k = len(c.token_ids)
        if k:
            response_ids[i, :k] = torch.tensor(c.token_ids)
            response_mask[i, :k] = 1
            sampler_logprobs[i, :k] = torch.tensor(c.logprobs, dtype=torch.float32)
    return TensorBatch(
        {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "response_ids": response_ids,
            "response_mask": response_mask,
            "sampler_logprobs": sampler_logprobs,
            "policy_version": torch.full((n,), version, dtype=torch.long),
        },
        {
            "prompt_index": [c.prompt_index for c in completions],
            "response_text": [c.text for c in completions],
            "finish_reason": [c.finish_reason for c in completions],
        },
    )


class RolloutWorker(DistributedWorker):
    """Ray actor hosting one rollout engine; `generate` returns a TensorBatch.

    Every sample records the policy version of the weights that generated it.
    """

    def __init__(self, engine: str, model_path: str, engine_kwargs: dict[str, Any] | None = None, torch_threads: int | None = None):
        super().__init__(torch_threads=torch_threads)
        self.engine_name = engine
        self.engine = get_rollout_engine(engine)(model_path, **(engine_kwargs or {}))
        from qwen25_rl.models import load_tokenizer

        self.pad_id = load_tokenizer(model_path).pad_token_id
        self.version = 0
        self._receiver = None

    def generate(self, prompts: list[list[int]], settings: SamplingSettings | dict) -> TensorBatch:
        if isinstance(settings, dict):
            settings = SamplingSettings(**settings)
        inject_fault("rollout", "generate")  # a no-op unless a chaos test set its env var
        completions = self.engine.generate(prompts, settings)
        return completions_to_batch(completions, prompts, self.version, self.pad_id)

    def get_version(self) -> int:
        return self.version

    def update_weights(self, version: int, weights) -> int:
        """Load new weights (HF parameter names; a list of (name, tensor) or PackedWeights) and
        adopt their policy version."""
        from qwen25_rl.actors.weight_sync import PackedWeights

        self.engine.load_weights(weights.unpack() if isinstance(weights, PackedWeights) else weights)
        self.version = version
        return version

    # -- collective transport (see actors/weight_sync.py) ---------------------------------

    def join_weight_group(self, addr: str, port: int, rank: int, world_size: int, backend: str) -> None:
        from qwen25_rl.actors.weight_sync import BroadcastGroup

        self._receiver = BroadcastGroup(addr, port, rank, world_size, backend)

    def receive_weights(self, version: int, layout: list) -> int:
        self.engine.load_weights(self._receiver.receive(layout))
        self.version = version
        return version
