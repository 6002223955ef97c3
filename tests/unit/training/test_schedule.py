"""Warm-up + cosine / linear / constant schedules, phase by phase."""

from __future__ import annotations

import math

import pytest

from qwen25_rl.training.schedule import PhaseSchedule, lr_at


def test_linear_warmup_reaches_the_peak():
    s = PhaseSchedule(steps=20, peak_lr=1.0, warmup_steps=4)
    assert [s.lr(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_decays_from_peak_to_the_floor():
    s = PhaseSchedule(steps=14, peak_lr=2.0, warmup_steps=4, decay="cosine", min_lr_ratio=0.1)
    assert s.lr(4) == pytest.approx(2.0)
    assert s.lr(13) == pytest.approx(0.2)
    mid = 4 + 9 / 2
    assert s.lr(int(mid)) > s.lr(int(mid) + 1)
    assert s.lr(9) == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))


def test_linear_and_constant_decay():
    lin = PhaseSchedule(steps=5, peak_lr=1.0, decay="linear", min_lr_ratio=0.0)
    assert [lin.lr(i) for i in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    const = PhaseSchedule(steps=5, peak_lr=0.3, warmup_steps=1, decay="constant")
    assert [const.lr(i) for i in range(5)] == pytest.approx([0.3] * 5)


def test_phases_run_back_to_back_on_the_global_step():
    phases = [PhaseSchedule(steps=3, peak_lr=1.0, decay="constant"), PhaseSchedule(steps=2, peak_lr=0.5, warmup_steps=2, decay="constant")]
    assert [lr_at(phases, i) for i in range(5)] == [1.0, 1.0, 1.0, 0.25, 0.5]
    with pytest.raises(ValueError, match="past the last phase"):
        lr_at(phases, 5)
