"""What the worker does to the model: packed-document masking, RoPE changes, chunked loss."""

from __future__ import annotations

import pytest
import torch

from qwen25_rl.models import build_model
from qwen25_rl.pretrain.worker import LossFn, set_rope


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny", vocab_size=128, attn_implementation="sdpa").eval()


def _logits(model, ids, pos):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]), use_cache=False).logits[0]


def test_restarting_positions_blocks_attention_across_documents(model):
    a, b = [5, 9, 17, 33], [41, 7, 2]
    packed = _logits(model, a + b, list(range(4)) + list(range(3)))
    alone = _logits(model, b, list(range(3)))
    torch.testing.assert_close(packed[4:], alone, rtol=1e-4, atol=1e-4)
    # Plain positions (cross-document attention): the second document sees the first.
    joined = _logits(model, a + b, list(range(7)))
    assert (joined[4:] - alone).abs().max() > 1e-3


def test_set_rope_rewrites_config_and_rotary_frequencies(model):
    m = build_model("tiny", vocab_size=128, attn_implementation="sdpa").eval()
    before = _logits(m, [3, 4, 5, 6], [0, 1, 2, 3])
    set_rope(m, 1_000_000.0, 4096)
    assert m.config.rope_parameters["rope_theta"] == 1_000_000.0
    assert m.config.max_position_embeddings == 4096
    head_dim = m.config.hidden_size // m.config.num_attention_heads
    expected = 1.0 / (1_000_000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    torch.testing.assert_close(m.model.rotary_emb.inv_freq, expected)
    assert (before - _logits(m, [3, 4, 5, 6], [0, 1, 2, 3])).abs().max() > 1e-4


def test_chunked_hidden_state_loss_equals_the_full_logits_loss(model):
    torch.manual_seed(1)
    batch = {
        "input_ids": torch.randint(0, 128, (2, 12)),
        "position_ids": torch.arange(12).expand(2, 12),
        "labels": torch.randint(0, 128, (2, 12)),
    }
    batch["labels"][0, :5] = -100
    grads = []
    losses = []
    for chunk in (None, 5):
        model.zero_grad()
        loss = LossFn(chunk)(model, model, batch, 17.0)
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.model.embed_tokens.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert isinstance(model.lm_head, torch.nn.Linear)  # restored after the chunked forward
