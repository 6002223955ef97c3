"""Console labels of step metrics."""

from qwen25_rl.metrics import CONSOLE_KEYS, console_label


def test_console_labels_are_short_and_distinct():
    assert [console_label(k) for k in CONSOLE_KEYS] == ["reward", "accuracy", "kl", "entropy", "response_length", "step_s"]


def test_a_statistic_is_labelled_by_its_group():
    assert console_label("reward/math/mean") == "math"
    assert console_label("response_length/max") == "response_length"
