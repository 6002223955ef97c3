"""Console labels of step metrics."""

from qwen25_rl.metrics import CONSOLE_KEYS, console_label


def test_console_labels_are_short_and_distinct():
    assert [console_label(k) for k in CONSOLE_KEYS] == ["reward", "accuracy", "kl", "entropy", "response_length", "step_s"]


def test_a_statistic_is_labelled_by_its_group():
    assert console_label("reward/math/mean") == "math"
    assert console_label("response_length/max") == "response_length"


def test_console_fields_carry_units_and_no_repeated_names():
    from qwen25_rl.metrics import console_field

    fields = [console_field(k, v) for k, v in zip(CONSOLE_KEYS, (0.3333, 0.25, 0.0012, 0.5357, 24.04, 0.7967))]
    assert fields == ["reward 0.3333", "accuracy 0.25", "kl 0.0012", "entropy 0.5357", "response_length 24.0 tok", "step_time 0.80 s"]
    assert console_field("round/pairs", 12) == "pairs 12"
