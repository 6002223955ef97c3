"""Console labels of step metrics."""

from qwen25_rl.metrics import CONSOLE_KEYS, console_label


def test_console_labels_are_short_and_distinct():
    assert [console_label(k) for k in CONSOLE_KEYS] == [
        "reward",
        "accuracy",
        "heldout_accuracy",
        "kl",
        "entropy",
        "response_length",
        "step_s",
    ]


def test_a_statistic_is_labelled_by_its_group():
    assert console_label("reward/math/mean") == "math"
    assert console_label("response_length/max") == "response_length"


def test_console_fields_carry_units_and_no_repeated_names():
    from qwen25_rl.metrics import console_field

    fields = [console_field(k, v) for k, v in zip(CONSOLE_KEYS, (0.3333, 0.25, 0.3, 0.0012, 0.5357, 24.04, 0.7967))]
    assert fields == [
        "reward 0.3333",
        "accuracy 0.25",
        "heldout_accuracy 0.3",
        "kl 0.0012",
        "entropy 0.5357",
        "response_length 24.0 tok",
        "step_time 0.80 s",
    ]
    assert console_field("round/pairs", 12) == "pairs 12"


def test_a_baseline_evaluation_row_prints_its_heldout_values_and_a_data_row_prints_nothing(tmp_path, capsys):
    from qwen25_rl.config.schema import LoggingConfig
    from qwen25_rl.metrics import StepLogger
    from qwen25_rl.runs import RunDir

    run = RunDir(tmp_path)
    logger = StepLogger(run, LoggingConfig(tensorboard=False, ray_metrics=False), stage="grpo", total_steps=20)
    logger.log(0, {"eval/accuracy": 0.296, "eval/pass@8": 0.72})
    logger.log(0, {"data/rows": 1500})
    with logger.phase("saving checkpoint step_10"):
        pass
    logger.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step 0/20  heldout_accuracy 0.296  (before training)"
    assert lines[1:] == ["saving checkpoint step_10 ...", "saving checkpoint step_10: done in 0.0 s"]
