"""`ray job submit` against a real `ray start --head`: the tiny GRPO and DPO runs as Ray jobs,
their status, their metrics files and their Ray metrics on the node's Prometheus endpoint."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1500)]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A head node of our own: `ray start --head --block` in its own process group, so stopping
    it kills exactly its processes (`ray stop` would kill every Ray on the machine)."""
    gcs, dash, metrics, agent_http, agent_grpc, runtime_env = (free_port() for _ in range(6))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--num-cpus=4",
            f"--port={gcs}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--metrics-export-port={metrics}",
            "--include-dashboard=true",
            "--object-store-memory=400000000",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
            # every port of our own: another Ray on the machine must not make the job agent fail
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 180
        while job_cli(address, "list", timeout=60).returncode != 0:
            assert proc.poll() is None and time.time() < deadline, "ray start --head did not come up"
            time.sleep(2)
        yield address, metrics
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        shutil.rmtree(temp, ignore_errors=True)


# `ray start` (Ray 2.60) enables token authentication and writes ~/.ray/auth_token; the job CLI
# only sends that token when told the cluster uses it.
CLI_ENV = os.environ | {"RAY_AUTH_MODE": "token"}


def job_cli(address: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", *args, "--address", address], capture_output=True, text=True, timeout=timeout, env=CLI_ENV
    )


def job_status(address: str, job_id: str) -> str:
    """The job's status through the SDK, in a process of its own: the SDK reads RAY_AUTH_MODE
    when Ray is first imported, and this test process imported Ray without it."""
    code = "import sys; from ray.job_submission import JobSubmissionClient as C; print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)"
    out = subprocess.run([sys.executable, "-c", code, address, job_id], capture_output=True, text=True, timeout=120, env=CLI_ENV)
    return (
        out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else f"(status query failed: {out.stderr[-300:]})"
    )


def test_grpo_runs_as_a_submitted_ray_job(ray_head, tiny_model_dir, digit_task, tmp_path, grpo_overrides, shadowing_folder):
    """Submitted from a user's folder that holds reward.py, actors.py, sandboxes.py and
    pretrain.py of its own: the job's working dir (on the driver's and every worker's sys.path)
    must not shadow the package."""
    address, metrics_port = ray_head
    out = tmp_path / "runs"
    overrides = grpo_overrides(
        tiny_model_dir,
        digit_task,
        out,
        "job",
        **{
            "rollout.engine": "vllm",
            "policy.strategy": "deepspeed",
            "algorithm.total_steps": 3,
            "optimizer.lr": 1.0e-2,
            "checkpoint.every_n_steps": 3,
        },
    )
    entry = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "qwen25_rl", "grpo", "--config", "configs/tiny/grpo.yaml", *overrides])
    status, logs, seen_gauge = submit_and_wait(
        address, metrics_port, "qwen25-grpo-test", entry, shadowing_folder, "ray_qwen25_rl_grpo_reward_mean"
    )
    assert status == "SUCCEEDED", f"{status}\n{logs[-4000:]}"

    rows = read_metrics(out / "job" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all("reward/mean" in r for r in rows)
    assert (out / "job" / "checkpoints" / "step_3" / "COMPLETE").is_file()
    # The driver prints one JSON summary line at the end; actor output (streamed to the driver
    # asynchronously, e.g. a progress bar of the final save) may still arrive after it.
    summaries = [json.loads(line) for line in logs.splitlines() if line.startswith('{"run_dir"')]
    assert len(summaries) == 1 and summaries[0]["run_dir"].endswith("job"), logs[-4000:]
    assert seen_gauge, "the run's Ray metrics never reached the node's Prometheus endpoint"
    assert "was imported instead of" not in logs


def test_dpo_runs_as_a_submitted_ray_job(ray_head, tiny_model_dir, digit_task, tmp_path, shadowing_folder):
    """One sampling round of the tiny DPO stage (vLLM rollouts, DeepSpeed policy) as a Ray job."""
    address, metrics_port = ray_head
    out = tmp_path / "runs"
    # The letter-e share: graded from the first sample on, so a random model's groups are not all tied.
    reward = "[{type: custom, name: e, params: {path: '" + str(digit_task / "digit_reward.py") + ":letter_e_fraction', isolation: thread}}]"
    overrides = {
        "model.path": str(tiny_model_dir),
        "data.train_files": f"[{digit_task / 'train.jsonl'}]",
        "data.eval_files": "[]",
        "data.prompt_key": "prompt",
        "reward.functions": reward,
        "reward.pool.num_cpus_per_worker": 0.25,
        "rollout.samples_per_prompt": 4,
        "rollout.max_new_tokens": 16,
        "rollout.max_model_len": 256,
        "algorithm.rounds": 1,
        "algorithm.prompts_per_round": 8,
        "algorithm.pairs_per_step": 4,
        "algorithm.pairing.rule": "best_vs_worst",
        "eval.at_start": False,
        "checkpoint.every_n_steps": 1,
        "logging.output_dir": str(out),
        "logging.run_name": "dpo-job",
        "logging.tensorboard": False,
    }
    args = [f"{k}={v}" for k, v in overrides.items()]
    entry = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "qwen25_rl", "dpo", "--config", "configs/tiny/dpo.yaml", *args])
    status, logs, seen_gauge = submit_and_wait(
        address, metrics_port, "qwen25-dpo-test", entry, shadowing_folder, "ray_qwen25_rl_dpo_dpo_loss"
    )
    assert status == "SUCCEEDED", f"{status}\n{logs[-4000:]}"
    rows = read_metrics(out / "dpo-job" / "metrics.jsonl")
    assert rows and all("dpo/loss" in r for r in rows) and rows[0]["round/pairs"] > 0
    assert (out / "dpo-job" / "rounds" / "round_0" / "pairs.jsonl").is_file()
    assert (out / "dpo-job" / "final" / "model.safetensors").is_file()
    summaries = [json.loads(line) for line in logs.splitlines() if line.startswith('{"run_dir"')]
    assert len(summaries) == 1 and summaries[0]["run_dir"].endswith("dpo-job"), logs[-4000:]
    assert seen_gauge, "the run's Ray metrics never reached the node's Prometheus endpoint"


def submit_and_wait(address: str, metrics_port: int, submission_id: str, entry: str, workdir, gauge: str) -> tuple[str, str, bool]:
    """Submit `entry` as a job from `workdir`, poll its status (and the node's metrics endpoint
    for `gauge`) until it ends; returns (status, logs, whether the gauge was seen)."""
    # The job agent on the node can come up a little after the dashboard: retry, bounded.
    t_submit = time.time()
    for _ in range(20):
        submit = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", address, "--no-wait", "--working-dir", str(workdir)]
            + ["--submission-id", submission_id, "--", "bash", "-c", entry],
            capture_output=True,
            text=True,
            timeout=300,
            env=CLI_ENV,
        )
        if "No available agent" not in submit.stderr:
            break
        time.sleep(4)
    assert submit.returncode == 0, submit.stderr[-3000:]

    seen_gauge = False
    seen_status: dict[str, float] = {}  # status -> seconds after submission when first seen
    deadline = time.time() + 900
    status = ""
    while time.time() < deadline:
        status = job_status(address, submission_id)
        if not seen_gauge:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
                seen_gauge = gauge in text
            except OSError:
                pass
        if status not in seen_status:
            seen_status[status] = round(time.time() - t_submit, 1)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(3)
    logs = job_cli(address, "logs", submission_id).stdout
    print(f"job status first seen (s after submit): {seen_status}\n{logs}")
    return status, logs, seen_gauge
