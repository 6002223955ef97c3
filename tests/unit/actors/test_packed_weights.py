"""PackedWeights (the object-store weight-sync payload): every name comes back with its exact
values, dtype and shape; bf16 travels as int16 bit patterns; a tensor listed under two names (a
tied output head) travels once; the arrays are views of the weights (no packing copy)."""

from __future__ import annotations

import pickle

import torch

from qwen25_rl.actors.weight_sync import PackedWeights


def test_round_trip_with_a_tied_head_sent_once():
    emb = torch.randn(10, 4).to(torch.bfloat16)
    named = [
        ("model.embed_tokens.weight", emb),
        ("model.layers.0.mlp.up_proj.weight", torch.randn(3, 4)),
        ("model.norm.weight", torch.ones(4, dtype=torch.bfloat16)),
        ("scalar", torch.tensor(2.5)),
        ("empty.a", torch.empty(0)),
        ("empty.b", torch.empty(0)),
        ("lm_head.weight", emb),
    ]
    packed = PackedWeights.pack(named)
    assert packed.aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    assert packed.nbytes == 10 * 4 * 2 + 3 * 4 * 4 + 4 * 2 + 4
    # what Ray does to it: out-of-band buffers through pickle protocol 5
    back = dict(pickle.loads(pickle.dumps(packed, protocol=5)).unpack())
    assert list(back) == [n for n, _ in named if n != "lm_head.weight"] + ["lm_head.weight"]
    for name, t in named:
        assert back[name].dtype == t.dtype and back[name].shape == t.shape and torch.equal(back[name], t), name


def test_buffers_are_views_of_the_weights():
    w = torch.randn(64, 32)
    packed = PackedWeights.pack([("w", w)])
    assert packed.buffers[0].ctypes.data == w.data_ptr()


def test_views_of_one_storage_with_other_shapes_are_not_aliases():
    base = torch.randn(4, 6)
    packed = PackedWeights.pack([("a", base), ("b", base.view(6, 4)), ("c", base[0])])
    assert packed.aliases == {}
    back = dict(packed.unpack())
    assert torch.equal(back["b"], base.view(6, 4)) and torch.equal(back["c"], base[0])
