"""Scoring responses with a causal LM: per-token log-probs (and entropy) of the response
tokens given the prompt, without ever materialising [batch, tokens, vocab] logits.

Layout: prompts left-padded, responses right-padded (what the rollout workers return), so the
last prompt token sits at column P-1 for every row and predicts response token 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qwen25_rl.algorithms.logprobs import token_log_probs_and_entropy_from_hidden, token_log_probs_from_hidden


def sequence_inputs(prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, position_ids) of prompt + response."""
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    # Positions count only real tokens, so left padding does not shift RoPE phases.
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


def response_hidden(
    model, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(hidden [B, R, H], output weight [V, H], output bias or None): the last hidden states
    that predict the response tokens, and the projection that turns them into logits."""
    input_ids, attention_mask, position_ids = sequence_inputs(prompt_ids, prompt_mask, response_ids, response_mask)
    p_len, r_len = prompt_ids.shape[1], response_ids.shape[1]
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).last_hidden_state
    # Hidden state at t predicts token t+1: columns P-1 .. P+R-2 predict the response.
    hidden = hidden[:, p_len - 1 : p_len + r_len - 1]
    head = model.get_output_embeddings()
    return hidden, head.weight, getattr(head, "bias", None)


def response_log_probs(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    response_ids: Tensor,
    response_mask: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs [B, R] of `response_ids` under `model` (a `*ForCausalLM`), and entropy [B, R]
    when asked. Positions outside `response_mask` hold values that callers must mask."""
    hidden, weight, bias = response_hidden(model, prompt_ids, prompt_mask, response_ids, response_mask)
    if with_entropy:
        lp, ent = token_log_probs_and_entropy_from_hidden(
            hidden, weight, response_ids, bias=bias, temperature=temperature, chunk_size=chunk_size
        )
        return lp, ent
    return token_log_probs_from_hidden(hidden, weight, response_ids, bias=bias, temperature=temperature, chunk_size=chunk_size), None
