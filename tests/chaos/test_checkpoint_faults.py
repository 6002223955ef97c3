"""Checkpoint faults, injected at chosen points (qwen25_rl.checkpointing, qwen25_rl.stages.rl_run):

- a process SIGKILLed while saving a checkpoint (before its files, half-way through a shard,
  before its manifest, before its rename): a new process resumes from the previous complete
  checkpoint with exactly the state an uninterrupted run had;
- a corrupted checkpoint (truncated shard, missing file, flipped byte): skipped with a message
  naming the file and what is wrong, the previous one used; none verifying stops with an error
  that names them, never a silent start from scratch;
- a full disk (RLIMIT_FSIZE in a child; a 2 MiB tmpfs where we are root): a clear error naming
  the folder and the space needed and free, the previous checkpoint intact, no partial folder;
- one real stage (GRPO, hf rollouts, DDP) whose newest checkpoint is corrupted: the rerun
  continues from the previous one and ends with the metrics of an uninterrupted run.

The small runs are a tiny torch model trained a few Adam steps on batches drawn from the global
RNG (so a resume that loses the RNG, the optimizer or the weights shows), saved through the real
RL save path (`rl_run.save_checkpoint` -> `staging` -> manifest -> publish -> `prune`) by a
stand-in for `RLCluster` that writes `PolicyWorker.save`'s layout. Each runs in its own process
(this file is also the child's script), so SIGKILL and rlimits hit only the child.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

try:
    from bounds import SLACK_S
except ImportError:  # run as the child's script (tests/ is not on its path): no bounds there
    SLACK_S = 0.0

pytestmark = pytest.mark.chaos

HIDDEN = 128  # 16.6k parameters: a 66 KB shard, a 133 KB optimizer state
STEPS = 4
# A child's Python + torch start-up and a few steps take ~3 s on an idle 2-core machine and up
# to ~20 s on a loaded one; bounds are a few times that plus the suite's slack.
CHILD_S = 60.0


# -- the child: a tiny run through the real RL checkpoint path ----------------------------------


class TinyCluster:
    """Stands in for `RLCluster` (save / load of the policy workers' state) around a tiny torch
    model: `save` writes PolicyWorker.save's layout (model shard, optimizer, RNG, worker json)."""

    def __init__(self, hidden: int):
        import torch

        torch.manual_seed(0)
        self.hidden = hidden
        self.model = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)

    def train_step(self) -> float:
        import torch

        x, y = torch.randn(16, self.hidden), torch.randn(16, 1)  # the global RNG: a resume must restore it
        loss = ((self.model(x) - y) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    def save(self, folder: str, tokenizer_path: str) -> None:
        import torch
        from safetensors.torch import save as safetensors_bytes

        from qwen25_rl import checkpointing as ck

        out = Path(folder)
        (out / "model").mkdir(parents=True)
        shard = safetensors_bytes({k: v.contiguous() for k, v in self.model.state_dict().items()})
        ck.atomic_write(out / "model" / "model.safetensors", shard)  # crash point save:mid-file: half a shard
        torch.save(self.opt.state_dict(), out / "optimizer.pt")
        (out / "policy_worker.json").write_text(json.dumps({"world_size": 1}))
        ck.save_rng_state(out / "rng_rank0.pt")

    def load(self, folder: str) -> None:
        import torch
        from safetensors.torch import load_file

        from qwen25_rl import checkpointing as ck

        src = Path(folder)
        self.model.load_state_dict(load_file(str(src / "model" / "model.safetensors")))
        self.opt.load_state_dict(torch.load(src / "optimizer.pt", weights_only=True))
        ck.load_rng_state(src / "rng_rank0.pt")

    def digest(self) -> str:
        import torch

        h = hashlib.sha256()
        for t in [*self.model.state_dict().values(), *(v for s in self.opt.state.values() for v in s.values()), torch.get_rng_state()]:
            h.update(t.detach().reshape(-1).contiguous().numpy().tobytes())
        return h.hexdigest()


def child_run(spec: dict) -> dict:
    """Train `spec["steps"]` steps (resuming with checkpoint.resume: auto), a checkpoint after
    each; crash / limit the file size at the save of `spec["fault_step"]` when asked."""
    t_start = time.perf_counter()
    import resource

    from qwen25_rl import checkpointing as ck
    from qwen25_rl.config.schema import StageConfig
    from qwen25_rl.runs import RunDir
    from qwen25_rl.stages.rl_run import load_state, save_checkpoint

    t_imported = time.perf_counter()
    run = RunDir.create(StageConfig(), spec["root"], spec["name"], stage="chaos")
    cluster = TinyCluster(spec.get("hidden", HIDDEN))
    t_lookup = time.perf_counter()
    ckpt = ck.resolve_resume("auto", run.checkpoints)
    t_found = time.perf_counter()
    state = {"step": 0, "sampler_position": 0, "policy_version": 0}
    if ckpt is not None:
        state = load_state(ckpt)
        cluster.load(str(ckpt / "policy"))
    t_ready = time.perf_counter()
    losses = {}
    for step in range(state["step"], spec["steps"]):
        done = step + 1
        losses[done] = cluster.train_step()
        if done == spec.get("fault_step"):
            if spec.get("crash_at"):
                os.environ[ck.CRASH_ENV] = spec["crash_at"]
            if spec.get("fsize_limit"):
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
                resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize_limit"], resource.RLIM_INFINITY))
        save_checkpoint(run, cluster, spec.get("keep_last"), "", {"step": done, "sampler_position": 8 * done, "policy_version": done})
    return {
        "resumed_from": ckpt.name if ckpt is not None else None,
        "losses": losses,
        "digest": cluster.digest(),
        "import_s": t_imported - t_start,
        "lookup_s": t_found - t_lookup,  # tidy + verification (sizes, sha256) of the checkpoints tried
        "load_s": t_ready - t_found,
    }


def child_main(spec: dict) -> int:
    from qwen25_rl.checkpointing import OutOfSpaceError

    try:
        result = child_run(spec)
    except OutOfSpaceError as e:
        result = {"error": str(e), "errno": e.errno}
        if spec.get("report_after_error"):
            from qwen25_rl import checkpointing as ck

            checkpoints = Path(spec["root"]) / spec["name"] / "checkpoints"
            result["entries"] = sorted(p.name for p in checkpoints.iterdir())
            result["previous_problems"] = ck.verify(checkpoints / f"step_{spec['fault_step'] - 1}")
        print("RESULT " + json.dumps(result), flush=True)
        return 3
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- helpers of the tests ---------------------------------------------------------------------


def run_child(spec: dict, *, wrap: list[str] | None = None, timeout: float = 120) -> tuple[int, dict | None, str, float]:
    env = {k: v for k, v in os.environ.items() if k != "QWEN25_RL_CRASH_AT"}
    t = time.perf_counter()
    proc = subprocess.run(
        [*(wrap or []), sys.executable, __file__, json.dumps(spec)], capture_output=True, text=True, timeout=timeout, env=env
    )
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return proc.returncode, (json.loads(lines[-1][7:]) if lines else None), proc.stderr, wall


@pytest.fixture
def no_leftover_children():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    deadline = time.time() + 5
    while True:
        new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.is_running()]
        if not new or time.time() > deadline:
            break
        time.sleep(0.1)
    assert not new, f"processes left behind: {[(p.pid, p.name()) for p in new]}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run: every checkpoint kept (a source of copies), its final state."""
    root = tmp_path_factory.mktemp("straight")
    rc, result, err, wall = run_child({"root": str(root), "name": "run", "steps": STEPS, "keep_last": None})
    assert rc == 0, err[-3000:]
    result["run"] = root / "run"
    result["wall_s"] = wall
    return result


def _entries(checkpoints: Path) -> list[str]:
    return sorted(p.name for p in checkpoints.iterdir())


def _copy_run(straight: dict, dest: Path) -> Path:
    shutil.copytree(straight["run"], dest / "run")
    return dest / "run" / "checkpoints"


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# -- a process killed while saving ----------------------------------------------------------


@pytest.mark.parametrize("point", ["save:before-files", "save:mid-file", "save:before-manifest", "save:before-rename"])
def test_a_save_killed_at_any_point_resumes_from_the_previous_checkpoint_exactly(straight, tmp_path, point, no_leftover_children):
    t0 = time.perf_counter()
    spec = {"root": str(tmp_path), "name": "run", "steps": STEPS, "keep_last": 2, "fault_step": 3, "crash_at": point}
    rc, result, err, _ = run_child(spec)
    assert rc == -signal.SIGKILL, err[-3000:]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [e for e in _entries(checkpoints) if not e.startswith(".")] == ["step_1", "step_2"]  # pruned only after a publish

    spec.pop("crash_at")
    rc, result, err, wall = run_child(spec)
    assert rc == 0, err[-3000:]
    assert result["resumed_from"] == "step_2"
    assert result["digest"] == straight["digest"]  # weights, optimizer and RNG exactly as uninterrupted
    assert result["losses"] == {k: v for k, v in straight["losses"].items() if int(k) > 2}
    assert _entries(checkpoints) == ["step_3", "step_4"]  # the killed save's partial folder removed
    assert all(not ck_problems for ck_problems in (_verify(checkpoints / "step_3"), _verify(checkpoints / "step_4")))
    print(f"{point}: resumed in {wall:.1f}s (lookup + verify {result['lookup_s'] * 1000:.0f} ms, load {result['load_s'] * 1000:.0f} ms)")
    assert time.perf_counter() - t0 < 2 * CHILD_S + SLACK_S


def _verify(folder: Path) -> list[str]:
    from qwen25_rl.checkpointing import verify

    return verify(folder)


# -- a corrupted checkpoint -------------------------------------------------------------------


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


CORRUPTIONS = {
    "truncated-shard": ("policy/model/model.safetensors", _truncate, "policy/model/model.safetensors: size"),
    "missing-file": ("policy/rng_rank0.pt", Path.unlink, "policy/rng_rank0.pt: missing"),
    "flipped-byte": ("policy/optimizer.pt", _flip_byte, "policy/optimizer.pt: sha256"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupted_newest_checkpoint_is_skipped_by_name_and_the_previous_one_resumed(straight, tmp_path, kind, no_leftover_children):
    t0 = time.perf_counter()
    checkpoints = _copy_run(straight, tmp_path)
    shutil.rmtree(checkpoints / "step_4")  # as if the run was at step 3, ...
    rel, damage, says = CORRUPTIONS[kind]
    damage(checkpoints / "step_3" / rel)  # ... and its newest checkpoint got damaged

    rc, result, err, wall = run_child({"root": str(tmp_path), "name": "run", "steps": STEPS, "keep_last": None})
    assert rc == 0, err[-3000:]
    assert f"skipping checkpoint {checkpoints / 'step_3'}: {says}" in err
    assert "moved it aside" in err
    assert result["resumed_from"] == "step_2"
    assert result["digest"] == straight["digest"]
    assert result["losses"] == {k: v for k, v in straight["losses"].items() if int(k) > 2}
    # The damaged folder was set aside by the process that is gone: the next lookup removes it.
    from qwen25_rl import checkpointing as ck

    assert ck.latest_checkpoint(checkpoints) == checkpoints / "step_4"
    assert _entries(checkpoints) == ["step_1", "step_2", "step_3", "step_4"]
    assert not _verify(checkpoints / "step_3")
    print(f"{kind}: resumed in {wall:.1f}s (lookup + verify {result['lookup_s'] * 1000:.0f} ms, load {result['load_s'] * 1000:.0f} ms)")
    assert time.perf_counter() - t0 < CHILD_S + SLACK_S


def test_checkpoints_that_all_fail_verification_stop_the_run_naming_each(straight, tmp_path, no_leftover_children):
    from qwen25_rl import checkpointing as ck

    t0 = time.perf_counter()
    checkpoints = _copy_run(straight, tmp_path)
    for n in range(1, STEPS + 1):
        _flip_byte(checkpoints / f"step_{n}" / "policy" / "model" / "model.safetensors")
    with pytest.raises(ck.CheckpointError) as err:
        ck.resolve_resume("auto", checkpoints)
    for n in range(1, STEPS + 1):
        assert f"{checkpoints / f'step_{n}'}: policy/model/model.safetensors: sha256" in str(err.value)
    assert "checkpoint.resume: never" in str(err.value)
    assert _entries(checkpoints) == [f"step_{n}" for n in range(1, STEPS + 1)]  # nothing moved or removed
    assert ck.resolve_resume("never", checkpoints) is None  # starting over is the user's explicit choice
    assert time.perf_counter() - t0 < 5 + SLACK_S


def test_a_corrupted_ray_train_checkpoint_is_set_aside_and_forgotten_by_rays_snapshot(tmp_path, no_leftover_children):
    """The pretrain / SFT / RM resume path against Ray Train's own checkpoint bookkeeping (its
    controller's CheckpointManager, restored from the snapshot as on a rerun; Ray internals)."""
    import asyncio

    from ray.train import Checkpoint, CheckpointConfig
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager
    from ray.train.v2._internal.execution.storage import StorageContext
    from ray.train.v2._internal.execution.training_report import _TrainingReport

    from qwen25_rl import checkpointing as ck
    from qwen25_rl.pretrain.driver import forget_missing_checkpoints
    from qwen25_rl.pretrain.worker import resume_choice

    t0 = time.perf_counter()
    checkpoints = tmp_path / "checkpoints"
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="checkpoints")

    def saved(step: int) -> Checkpoint:  # what the workers upload: files, then rank 0's manifest
        folder = checkpoints / f"step_{step}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(os.urandom(4096))
        (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
        ck.write_manifest(folder)
        return Checkpoint(path=str(folder))

    async def scenario() -> None:
        manager = CheckpointManager(CheckpointConfig(num_to_keep=2), storage)
        for step in (2, 4):
            manager.register_checkpoint(_TrainingReport(checkpoint=saved(step), metrics={}, validation=False))
        _flip_byte(checkpoints / "step_4" / "model.safetensors")

        # The rerun's driver (pretrain.driver.open_run): verify, set aside, forget.
        chosen = ck.resolve_resume("auto", checkpoints)
        assert chosen == checkpoints / "step_2"
        assert forget_missing_checkpoints(checkpoints) == ["step_4"]
        # Ray's controller restores its bookkeeping from the snapshot (it refuses a snapshot that
        # names a missing folder) and hands the workers its latest, which they check against ours.
        restored = CheckpointManager(CheckpointConfig(num_to_keep=2), storage)
        latest = restored.latest_checkpoint_result.checkpoint.path
        assert Path(latest).name == "step_2"
        assert resume_choice(latest, str(chosen.resolve())) == (str(chosen.resolve()), True)
        # Training goes on: step_4 saved again, then step_6; Ray prunes step_2, never the new step_4.
        for step in (4, 6):
            restored.register_checkpoint(_TrainingReport(checkpoint=saved(step), metrics={}, validation=False))
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step_")) == ["step_4", "step_6"]
    assert ck.verify(checkpoints / "step_4") == [] and ck.latest_checkpoint(checkpoints) == checkpoints / "step_6"
    # A restart inside the run: Ray's newer checkpoint wins, verified in full by the worker.
    assert resume_choice(str(checkpoints / "step_6"), str(checkpoints / "step_2")) == (str(checkpoints / "step_6"), False)
    assert time.perf_counter() - t0 < 10 + SLACK_S


# -- a full disk ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "writer,limit_of_shard",
    [("shard (Python write: EFBIG)", 0.5), ("optimizer (torch.save: no errno)", 1.5)],
    ids=["shard-errno", "optimizer-torch"],
)
def test_a_save_over_the_file_size_limit_fails_clearly_and_keeps_the_previous_checkpoint(
    straight, tmp_path, writer, limit_of_shard, no_leftover_children
):
    t0 = time.perf_counter()
    shard = (straight["run"] / "checkpoints" / "step_1" / "policy" / "model" / "model.safetensors").stat().st_size
    spec = {
        "root": str(tmp_path),
        "name": "run",
        "steps": STEPS,
        "keep_last": 1,
        "fault_step": 3,
        "fsize_limit": int(shard * limit_of_shard),
        "report_after_error": True,
    }
    rc, result, err, _ = run_child(spec)
    assert rc == 3, err[-3000:]
    step_3 = tmp_path / "run" / "checkpoints" / "step_3"
    message = result["error"]
    assert f"not enough disk space to save {step_3}" in message
    assert "file size limit (EFBIG, RLIMIT_FSIZE" in message
    assert "It needs about" in message and "(the size of step_2)" in message and "free on the file system of" in message
    assert f"{step_3.parent / 'step_2'} is untouched" in message
    assert result["entries"] == ["step_2"]  # no partial folder, the previous checkpoint kept (keep_last 1)
    assert result["previous_problems"] == []

    # Space back: the rerun resumes from step_2 and ends where an uninterrupted run does.
    spec.pop("fsize_limit")
    rc, result, err, wall = run_child(spec)
    assert rc == 0, err[-3000:]
    assert result["resumed_from"] == "step_2" and result["digest"] == straight["digest"]
    print(f"{writer}: error, then resumed in {wall:.1f}s")
    assert time.perf_counter() - t0 < 2 * CHILD_S + SLACK_S


def test_a_full_tmpfs_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path, no_leftover_children):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounting a tmpfs needs root and unshare(1)")
    t0 = time.perf_counter()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # 256 hidden: a 260 KB shard, ~800 KB per checkpoint: step_1 and step_2 fit in 2 MiB, step_3 does not.
    spec = {"root": str(mnt), "name": "run", "steps": 3, "keep_last": None, "fault_step": 3, "hidden": 256, "report_after_error": True}
    script = f'mount -t tmpfs -o size=2m tmpfs {mnt} || exit 77; exec "$@"'
    # A private mount namespace: the tmpfs goes away with the child, whatever happens to it.
    rc, result, err, _ = run_child(spec, wrap=["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"])
    if rc == 77:
        pytest.skip(f"cannot mount a tmpfs here: {err.strip()[-300:]}")
    assert rc == 3, err[-3000:]
    message = result["error"]
    step_3 = mnt / "run" / "checkpoints" / "step_3"
    assert f"not enough disk space to save {step_3}: No space left on device (ENOSPC)" in message
    assert "It needs about" in message and "(the size of step_2)" in message and f"free on the file system of {step_3.parent}" in message
    assert result["entries"] == ["step_1", "step_2"] and result["previous_problems"] == []
    assert time.perf_counter() - t0 < CHILD_S + SLACK_S


# -- one real stage ---------------------------------------------------------------------------


@pytest.mark.slow
def test_grpo_rerun_after_its_newest_checkpoint_is_corrupted_continues_from_the_previous_one(
    tiny_model_dir, digit_task, tmp_path, grpo_overrides, grpo_straight_run, no_leftover_children
):
    from qwen25_rl.paths import REPO_ROOT
    from qwen25_rl.runs import read_metrics

    # A copy of the session's uninterrupted run (hf rollouts, DDP policy, 4 steps, checkpoints
    # step_2 and step_4), rerun under its new name with the same settings.
    config = str(REPO_ROOT / "configs" / "tiny" / "grpo.yaml")
    shutil.copytree(grpo_straight_run["run"], tmp_path / "run")
    straight = grpo_straight_run["rows"]
    args = [
        sys.executable,
        "-m",
        "qwen25_rl",
        "grpo",
        "--config",
        config,
        *grpo_overrides(tiny_model_dir, digit_task, tmp_path, "run", **grpo_straight_run["settings"]),
    ]
    shard = tmp_path / "run" / "checkpoints" / "step_4" / "policy" / "model" / "model.safetensors"
    _flip_byte(shard)

    t0 = time.perf_counter()
    second = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    rerun_s = time.perf_counter() - t0
    assert second.returncode == 0, second.stderr[-4000:]
    out = second.stdout + second.stderr
    assert f"skipping checkpoint {shard.parents[2]}: policy/model/model.safetensors: sha256" in out
    assert "resumed from" in out and "step_2" in out
    resumed = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight[2:], resumed[2:]):
        for key in ("reward/mean", "policy/pg_loss", "policy/entropy", "policy/grad_norm", "prompts/position", "policy_version"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    assert not _verify(shard.parents[2])  # step_4 saved again, whole
    print(f"grpo rerun (resume from step_2 + steps 3-4): {rerun_s:.1f}s")
    assert rerun_s < 600 + SLACK_S


def _pretrain_config(root: Path) -> dict:
    """tests/integration/pretrain/conftest.py's small pretrain run: two DeepSpeed ZeRO-2 workers
    (each uploads its own optimizer partition and RNG into the checkpoint), 6 steps, every 2."""
    data = root / "data"
    return {
        "stage": "pretrain",
        "model": {"preset": "tiny"},
        "data": {
            "synthetic": {"out_dir": str(data), "arithmetic_train": 200, "arithmetic_heldout": 10, "code_train": 40, "code_heldout": 5},
            "sources": [
                {"name": "arithmetic", "files": [str(data / "pretrain_arithmetic.jsonl")], "weight": 0.5},
                {"name": "code", "files": [str(data / "pretrain_code.jsonl")], "weight": 0.5},
            ],
        },
        "tokenizer_training": {"enabled": True, "vocab_size": 400},
        "phases": [{"name": "general", "steps": 6, "seq_len": 64}],
        "trainer": {
            "num_workers": 2,
            "strategy": "deepspeed",
            "zero_stage": 2,
            "micro_batch_size": 2,
            "global_batch_size": 4,
            "cpus_per_worker": 1,
            "report_interval_s": 0,
        },
        "optimizer": {"lr": 1e-3},
        "checkpoint": {"every_n_steps": 2, "keep_last": 2},
        "ray": {"num_cpus": 2, "include_dashboard": False, "object_store_memory_mb": 128},
        "logging": {"output_dir": str(root / "runs"), "run_name": "run", "tensorboard": False, "ray_metrics": False, "report": False},
    }


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_pretrain_rerun_after_its_newest_checkpoint_is_corrupted_continues_from_the_previous_one(tmp_path, no_leftover_children):
    import yaml

    from qwen25_rl import checkpointing as ck
    from qwen25_rl.runs import read_metrics

    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text(yaml.safe_dump(_pretrain_config(tmp_path)))
    args = [sys.executable, "-m", "qwen25_rl", "pretrain", "--config", str(cfg)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run = tmp_path / "runs" / "run"
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_4", "step_6"]
    files = ck.read_manifest(checkpoints / "step_6")["files"]
    assert {"rng_rank0.pt", "rng_rank1.pt", "model.safetensors", "trainer_state.json"} <= set(files)  # both ranks' uploads
    assert sum("optim_states" in f for f in files) == 2  # each rank's ZeRO partition
    assert ck.verify(checkpoints / "step_6") == [] and ck.verify(run / "final") == []
    straight = {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}

    shard = checkpoints / "step_6" / "model.safetensors"
    _flip_byte(shard)
    t0 = time.perf_counter()
    second = subprocess.run(args, capture_output=True, text=True, timeout=900)
    rerun_s = time.perf_counter() - t0
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-6000:]
    assert f"skipping checkpoint {checkpoints / 'step_6'}: model.safetensors: sha256" in out
    assert f"resuming from {checkpoints / 'step_4'}" in out
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 5, 6]  # the rerun trained steps 5 and 6 again
    for r in rows[-2:]:
        assert r["batch_hash"] == straight[r["step"]]["batch_hash"]
        assert r["loss"] == pytest.approx(straight[r["step"]]["loss"], rel=1e-5)
    assert ck.verify(checkpoints / "step_6") == []  # saved again, whole
    print(f"pretrain rerun (resume from step_4 + steps 5-6): {rerun_s:.1f}s")
    assert rerun_s < 600 + SLACK_S


if __name__ == "__main__":
    sys.exit(child_main(json.loads(sys.argv[1])))
