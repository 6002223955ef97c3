"""`qwen25-rl eval` exports its numbers through Ray's metrics like every stage (RayGauges:
`qwen25_rl_eval_<key>` tagged with the run name): the progress after each batch and the
summary at the end. Given responses (no model), scored by the reward pool on the session's Ray."""

from __future__ import annotations

import json

from qwen25_rl.cli import main
from qwen25_rl.metrics import RayGauges

HAS_E = 'def has_e(sample):\n    return float("e" in sample.response)\n'


def test_eval_exports_progress_and_summary_as_ray_gauges(local_ray, tmp_path, capsys, monkeypatch):
    import qwen25_rl.stages.evaluate as evaluate

    exported: list[tuple[str, str, dict]] = []

    class Recorded(RayGauges):
        def set(self, metrics):
            exported.append((self.prefix, self.run_name, dict(metrics)))
            super().set(metrics)  # the real gauges too, on the session's Ray

    monkeypatch.setattr(evaluate, "RayGauges", Recorded)
    rows = [{"id": f"q{i}", "prompt": f"word {i}", "answer": "x"} for i in range(6)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "answers.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "response": "yes" if i % 2 else "no"}) + "\n" for i in range(6))
    )
    (tmp_path / "has_e.py").write_text(HAS_E)
    reward = f"reward.functions=[{{type: custom, name: has_e, params: {{path: '{tmp_path / 'has_e.py'}:has_e', isolation: thread}}}}]"
    argv = ["eval", "--data", str(tmp_path / "prompts.jsonl"), "--responses", str(tmp_path / "answers.jsonl")]
    argv += ["--out", str(tmp_path / "eval-run"), "data.prompt_key=prompt", "eval.prompts_per_batch=4", "logging.tensorboard=false"]
    argv += ["logging.report=false", "reward.pool.num_cpus_per_worker=0.25", reward]
    assert main(argv) == 0, capsys.readouterr().err[-3000:]

    assert {(prefix, run) for prefix, run, _ in exported} == {("eval", "eval-run")}
    progress = [m for _, _, m in exported if "eval/items_scored" in m]
    assert [m["eval/items_scored"] for m in progress] == [4, 6]  # one per batch of 4 prompts
    assert progress[-1]["eval/accuracy"] == 0.5
    summary = json.loads((tmp_path / "eval-run" / "summary.json").read_text())
    final = exported[-1][2]
    assert final["eval/accuracy"] == summary["accuracy"] == 0.5 and final["eval/items"] == 6
