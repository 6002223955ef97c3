"""Packing: no token is lost, rows never exceed their length, positions restart per document."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen25_rl.pretrain.packing import IGNORE, best_fit_bins, pack_documents, pack_samples, sample_labels

EOS, PAD = 1, 0
docs_strategy = st.lists(st.lists(st.integers(2, 50), min_size=0, max_size=40), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(docs=docs_strategy, seq_len=st.integers(2, 33), reset=st.booleans())
def test_pack_documents_keeps_every_token_and_every_prediction(docs, seq_len, reset):
    rows = pack_documents(docs, seq_len, EOS, PAD, reset_positions=reset)
    stream = np.concatenate([np.array(d + [EOS], dtype=np.int64) for d in docs])
    assert rows.input_ids.shape[1] == seq_len
    flat = rows.input_ids.reshape(-1)
    n = stream.size
    assert rows.lengths.sum() == n
    np.testing.assert_array_equal(flat[:n], stream)
    assert (flat[n:] == PAD).all() and flat.size - n < seq_len
    labels = rows.labels.reshape(-1)
    np.testing.assert_array_equal(labels[: n - 1], stream[1:])  # also across row boundaries
    assert (labels[n - 1 :] == IGNORE).all()


@settings(max_examples=100, deadline=None)
@given(docs=docs_strategy, seq_len=st.integers(2, 33))
def test_positions_restart_at_each_document_and_each_row(docs, seq_len):
    rows = pack_documents(docs, seq_len, EOS, PAD, reset_positions=True)
    expected = []
    for d in docs:
        expected.extend(range(len(d) + 1))
    expected = np.array(expected)
    # Within a row, a document that continued from the previous row restarts at 0.
    pos = rows.position_ids.reshape(-1)[: expected.size]
    for i in range(expected.size):
        if i % seq_len == 0:
            assert pos[i] == 0
        elif expected[i] == 0:
            assert pos[i] == 0
        else:
            assert pos[i] == pos[i - 1] + 1


def test_cross_document_attention_keeps_plain_positions():
    rows = pack_documents([[5, 6], [7, 8, 9]], 4, EOS, PAD, reset_positions=False)
    np.testing.assert_array_equal(rows.position_ids, [[0, 1, 2, 3], [0, 1, 2, 3]])
    rows = pack_documents([[5, 6], [7, 8, 9]], 4, EOS, PAD, reset_positions=True)
    np.testing.assert_array_equal(rows.input_ids, [[5, 6, EOS, 7], [8, 9, EOS, PAD]])
    np.testing.assert_array_equal(rows.position_ids, [[0, 1, 2, 0], [0, 1, 2, 3]])
    np.testing.assert_array_equal(rows.labels, [[6, EOS, 7, 8], [9, EOS, IGNORE, IGNORE]])


def test_an_eos_id_inside_a_document_does_not_split_it():
    rows = pack_documents([[5, EOS, 6]], 8, EOS, PAD)
    np.testing.assert_array_equal(rows.position_ids[0, :4], [0, 1, 2, 3])


samples_strategy = st.lists(st.lists(st.integers(2, 50), min_size=1, max_size=30), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(samples=samples_strategy, max_length=st.integers(30, 64), packing=st.booleans())
def test_pack_samples_keeps_every_sample_whole_and_within_the_length(samples, max_length, packing):
    pairs = [(np.array(s), np.array([x + 100 for x in s])) for s in samples]
    rows, bins = pack_samples(pairs, max_length, PAD, packing=packing)
    assert sorted(i for b in bins for i in b) == list(range(len(samples)))
    for r, members in enumerate(bins):
        at = 0
        for i in members:
            n = len(samples[i])
            np.testing.assert_array_equal(rows.input_ids[r, at : at + n], samples[i])
            np.testing.assert_array_equal(rows.labels[r, at : at + n], pairs[i][1])
            np.testing.assert_array_equal(rows.position_ids[r, at : at + n], np.arange(n))
            at += n
        assert at == rows.lengths[r] <= max_length
        assert (rows.input_ids[r, at:] == PAD).all() and (rows.labels[r, at:] == IGNORE).all()
    if not packing:
        assert rows.num_rows == len(samples)


def test_best_fit_fills_bins_tightly():
    bins = best_fit_bins([6, 5, 4, 3, 2], 10)
    assert sorted(sorted(b) for b in bins) == [[0, 2], [1, 3, 4]]


def test_sample_longer_than_the_row_is_refused():
    with pytest.raises(ValueError, match="truncate or drop"):
        pack_samples([(np.arange(9), np.arange(9))], 8, PAD)


def test_sample_labels_are_the_next_token_where_it_is_trained():
    labels = sample_labels([10, 11, 12, 13, 14], [0, 0, 1, 1, 0])
    np.testing.assert_array_equal(labels, [IGNORE, 12, 13, IGNORE, IGNORE])
