"""pretrain.progress: each worker's step in the run folder, the worker-failure seam, and how a
failed rank is described."""

from __future__ import annotations

import subprocess
import sys

from qwen25_rl.pretrain.config import TrainerConfig
from qwen25_rl.pretrain.progress import FAIL_ENV, FAIL_TIMES_ENV, cause_of, died_first, fault_from_env, read_progress, write_progress


def test_workers_are_restarted_twice_by_default():
    assert TrainerConfig().max_failures == 2


def test_progress_is_written_and_read_back(tmp_path):
    assert read_progress(tmp_path, 1) is None
    write_progress(tmp_path, 1, 7, "general")
    info = read_progress(tmp_path, 1)
    assert (info["rank"], info["step"], info["phase"]) == (1, 7, "general") and info["pid"] > 0
    assert [p.name for p in tmp_path.iterdir()] == [".worker_rank1.json"]  # no temporary file left


def test_the_seam_is_read_from_the_environment():
    assert fault_from_env({}) is None
    assert fault_from_env({FAIL_ENV: "4"}) == {"step": 4, "rank": 0, "times": 1}
    assert fault_from_env({FAIL_ENV: "4:1", FAIL_TIMES_ENV: "2"}) == {"step": 4, "rank": 1, "times": 2}


def test_the_seam_fires_only_at_its_step_and_rank_and_as_often_as_asked(tmp_path):
    code = (
        "import sys; from qwen25_rl.pretrain.progress import maybe_fail; "
        "maybe_fail({'step': 3, 'rank': 1, 'times': 2}, sys.argv[1], int(sys.argv[2]), int(sys.argv[3])); print('alive')"
    )

    def run(rank: int, step: int) -> int:
        return subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), str(rank), str(step)], capture_output=True, timeout=120
        ).returncode

    assert run(0, 3) == 0 and run(1, 2) == 0  # another rank, another step: nothing
    assert run(1, 3) == -9 and run(1, 3) == -9  # SIGKILL, twice
    assert run(1, 3) == 0  # the count is used up (the marker in the run folder)
    assert (tmp_path / ".fault_step3_rank1").read_text() == "2"


class WorkerHealthCheckFailedError(Exception):  # the name Ray Train gives a dead worker's failure
    def __init__(self, message, failure):
        super().__init__(message)
        self.health_check_failure = failure


def test_a_rank_whose_process_died_is_named_first_with_why_it_died():
    dead = WorkerHealthCheckFailedError(
        "A worker health check failed. Worker info: Worker(...long...)",
        RuntimeError("class_name: RayTrainWorker pid: 12 The actor is dead because its worker process has died."),
    )
    peer = RuntimeError("Connection closed by peer")
    assert [rank for rank, _ in died_first({0: peer, 1: dead})] == [1, 0]
    assert cause_of(dead) == "its process died (RuntimeError: The actor is dead because its worker process has died.)"
    assert cause_of(peer) == "RuntimeError: Connection closed by peer"
