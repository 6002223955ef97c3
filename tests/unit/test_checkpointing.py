"""Run state written safely (qwen25_rl.checkpointing): a process killed at any point of
publishing `final/` or saving a checkpoint leaves the old or the new complete folder, never
none and never half of one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qwen25_rl import checkpointing as ck
from qwen25_rl.config.schema import StageConfig
from qwen25_rl.errors import UserError
from qwen25_rl.runs import stage_run


def _folder(path: Path, tag: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        (path / name).write_text(f"{tag}:{name}")


def _tag(path: Path) -> str | None:
    if not path.is_dir():
        return None
    tags = {(path / n).read_text().split(":")[0] for n in ("model.safetensors", "config.json") if (path / n).is_file()}
    assert len(tags) == 1, f"{path} mixes files of {tags}"
    return tags.pop()


def test_publish_places_a_new_folder_and_replaces_an_existing_one_whole(tmp_path):
    dest = tmp_path / "final"
    with ck.staging(dest) as tmp:
        _folder(tmp, "v1")
    assert _tag(dest) == "v1"
    with ck.staging(dest) as tmp:
        _folder(tmp, "v2")
    assert _tag(dest) == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # nothing temporary left


def test_a_staging_block_that_raises_publishes_nothing(tmp_path):
    dest = tmp_path / "final"
    with ck.staging(dest) as tmp:
        _folder(tmp, "v1")
    with pytest.raises(RuntimeError), ck.staging(dest) as tmp:
        _folder(tmp, "v2")
        raise RuntimeError("writer failed")
    assert _tag(dest) == "v1" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_without_an_atomic_exchange_the_old_folder_is_moved_aside_and_recovered(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "_exchange", lambda a, b: False)
    dest = tmp_path / "final"
    with ck.staging(dest) as tmp:
        _folder(tmp, "v1")
    with ck.staging(dest) as tmp:
        _folder(tmp, "v2")
    assert _tag(dest) == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    # a publish killed between its two renames: the old folder is aside, none in place
    os.rename(dest, tmp_path / ".final.old-1")
    ck.recover(dest)
    assert _tag(dest) == "v2"


PUBLISH_SCRIPT = """
import os, signal, sys
from pathlib import Path
from qwen25_rl import checkpointing as ck

def folder(path, tag):
    path.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("model.safetensors", "config.json")):
        (path / name).write_text(f"{tag}:{name}")
        if i == 0 and os.environ.get("CRASH_MID_FILES"):
            os.kill(os.getpid(), signal.SIGKILL)

if os.environ.get("NO_EXCHANGE"):
    ck._exchange = lambda a, b: False
root = Path(sys.argv[1])
kind = sys.argv[2]
if kind == "final":
    with ck.staging(root / "final") as tmp:
        folder(tmp, "new")
else:
    with ck.staging(root / "checkpoints" / "step_20") as tmp:
        folder(tmp, "new")
        ck.mark_complete(tmp)
print("done")
"""

POINTS = ["mid-files", "publish:written", "publish:synced", "publish:exchanged", "publish:moved-aside", None]


def _run_killed(root: Path, kind: str, point: str | None, no_exchange: bool) -> int:
    env = dict(os.environ)
    env.pop(ck.CRASH_ENV, None)
    if point == "mid-files":
        env["CRASH_MID_FILES"] = "1"
    elif point is not None:
        env[ck.CRASH_ENV] = point
    if no_exchange:
        env["NO_EXCHANGE"] = "1"
    return subprocess.run([sys.executable, "-c", PUBLISH_SCRIPT, str(root), kind], env=env, timeout=60).returncode


@pytest.mark.parametrize("no_exchange", [False, True], ids=["exchange", "move-aside"])
@pytest.mark.parametrize("point", POINTS, ids=lambda p: p or "no-crash")
def test_publishing_final_killed_at_any_point_leaves_the_old_or_the_new_folder(tmp_path, point, no_exchange):
    _folder(tmp_path / "final", "old")
    rc = _run_killed(tmp_path, "final", point, no_exchange)
    on_this_path = {"publish:exchanged": not no_exchange, "publish:moved-aside": no_exchange, None: False}.get(point, True)
    assert rc == (-signal.SIGKILL if on_this_path else 0)
    ck.recover(tmp_path / "final")  # what every lookup does first
    assert _tag(tmp_path / "final") in ("old", "new")
    if point in ("mid-files", "publish:written", "publish:synced"):
        assert _tag(tmp_path / "final") == "old"
    ck.remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p or "no-crash")
def test_a_checkpoint_killed_at_any_point_of_its_save_is_never_resumed_from_half_written(tmp_path, point):
    previous = tmp_path / "checkpoints" / "step_10"
    _folder(previous, "old")
    ck.mark_complete(previous)
    _run_killed(tmp_path, "checkpoint", point, no_exchange=False)
    latest = ck.latest_checkpoint(tmp_path / "checkpoints")
    assert latest is not None and ck.is_complete(latest)
    if latest.name == "step_20":
        assert _tag(latest) == "new"
    else:
        assert latest == previous and _tag(previous) == "old"
    if point in ("mid-files", "publish:written", "publish:synced"):
        assert latest == previous
    ck.remove_stale(tmp_path / "checkpoints")
    assert all(not p.name.startswith(".") for p in (tmp_path / "checkpoints").iterdir())


def test_a_folder_without_the_marker_is_not_complete_and_resume_by_path_checks_it(tmp_path):
    half = tmp_path / "checkpoints" / "step_30"
    _folder(half, "x")
    assert ck.latest_checkpoint(tmp_path / "checkpoints") is None
    with pytest.raises(UserError, match="not a complete checkpoint"):
        ck.resolve_resume(str(half), tmp_path / "checkpoints")
    ck.mark_complete(half)
    assert ck.resolve_resume(str(half), tmp_path / "checkpoints") == half.resolve()
    assert ck.resolve_resume("auto", tmp_path / "checkpoints") == half
    assert ck.resolve_resume("never", tmp_path / "checkpoints") is None
    with pytest.raises(UserError, match="does not exist"):
        ck.resolve_resume(str(tmp_path / "checkpoints" / "step_999"), tmp_path / "checkpoints")


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path):
    for step in (5, 10, 15, 20):
        _folder(tmp_path / f"step_{step}", str(step))
        ck.mark_complete(tmp_path / f"step_{step}")
    _folder(tmp_path / "step_25", "25")  # incomplete: neither counted nor removed
    ck.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_15", "step_20", "step_25"]


def test_the_initial_model_is_built_once(tmp_path):
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        _folder(folder, "init")

    first = ck.ensure_initial_model(tmp_path, build)
    second = ck.ensure_initial_model(tmp_path, build)
    assert first == second == tmp_path / ck.INITIAL_MODEL and len(calls) == 1 and _tag(first) == "init"


def test_rng_state_round_trips_every_generator(tmp_path):
    import random

    import numpy as np
    import torch

    ck.save_rng_state(tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    ck.load_rng_state(tmp_path / "rng.pt")
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    state = ck.rng_state()
    assert set(state) == {"python", "numpy", "torch"} | ({"cuda"} if torch.cuda.is_available() else set())


def test_a_stage_that_fails_on_its_input_leaves_no_run_folder(tmp_path):
    with pytest.raises(UserError), stage_run(StageConfig(), tmp_path, "bad", "grpo"):
        raise UserError("model.path nowhere is not a Hugging Face model folder")
    assert not (tmp_path / "bad").exists()


def test_a_stage_that_fails_after_starting_or_on_a_resumed_folder_keeps_it(tmp_path):
    with pytest.raises(RuntimeError), stage_run(StageConfig(), tmp_path, "started", "grpo") as run:
        run.mark_started()
        raise RuntimeError("worker crashed")
    assert (tmp_path / "started" / "config.yaml").is_file()
    (tmp_path / "resumed").mkdir()
    with pytest.raises(UserError), stage_run(StageConfig(), tmp_path, "resumed", "grpo"):
        raise UserError("bad input")
    assert (tmp_path / "resumed").is_dir()


def test_atomic_write_never_leaves_half_a_file(tmp_path):
    target = tmp_path / "state.json"
    ck.atomic_write(target, "old")
    script = textwrap.dedent(f"""
        import os, signal
        from qwen25_rl import checkpointing as ck
        real_replace = os.replace
        def replace(a, b):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
        ck.atomic_write({str(target)!r}, "new" * 1000)
    """)
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == -signal.SIGKILL
    assert target.read_text() == "old"


# -- manifests, verification, running out of space -------------------------------------------


def _checkpoint(path: Path, tag: str) -> Path:
    (path / "policy" / "model").mkdir(parents=True, exist_ok=True)
    (path / "policy" / "model" / "model.safetensors").write_bytes(tag.encode() * 1000)
    (path / "policy" / "optimizer.pt").write_bytes(b"opt" + tag.encode() * 500)
    (path / "trainer_state.json").write_text(f'{{"tag": "{tag}"}}')
    ck.mark_complete(path)
    return path


def test_the_manifest_lists_every_file_and_verify_names_what_is_wrong(tmp_path):
    folder = _checkpoint(tmp_path / "step_1", "a")
    manifest = ck.read_manifest(folder)
    assert sorted(manifest["files"]) == ["policy/model/model.safetensors", "policy/optimizer.pt", "trainer_state.json"]
    assert manifest["bytes"] == sum(e["size"] for e in manifest["files"].values())
    assert ck.verify(folder) == []

    shard = folder / "policy" / "model" / "model.safetensors"
    shard.write_bytes(b"b" * 1000)  # same size, other bytes: only the hash sees it
    assert ck.verify(folder, hashes=False) == []
    (problem,) = ck.verify(folder)
    assert problem.startswith("policy/model/model.safetensors: sha256 ") and "differs from the manifest's" in problem
    shard.write_bytes(b"a" * 10)
    (folder / "policy" / "optimizer.pt").unlink()
    assert sorted(ck.verify(folder, hashes=False)) == [
        "policy/model/model.safetensors: size 10 bytes, the manifest says 1000",
        "policy/optimizer.pt: missing",
    ]


def test_markers_from_before_manifests_count_as_complete_and_a_garbled_one_does_not(tmp_path):
    for text in ("", "ok\n"):
        (tmp_path / ck.COMPLETE).write_text(text)
        assert ck.is_complete(tmp_path) and ck.read_manifest(tmp_path) is None and ck.verify(tmp_path) == []
    (tmp_path / ck.COMPLETE).write_text('{"files": ')
    (problem,) = ck.verify(tmp_path)
    assert problem.startswith("COMPLETE: not a readable manifest")


def test_every_published_folder_carries_its_manifest_and_opting_out_is_explicit(tmp_path):
    with ck.staging(tmp_path / "final") as tmp:
        _folder(tmp, "v1")
    assert sorted(ck.read_manifest(tmp_path / "final")["files"]) == ["config.json", "model.safetensors"]
    with ck.staging(tmp_path / "cache", manifest=False) as tmp:
        _folder(tmp, "v1")
    assert not ck.is_complete(tmp_path / "cache")


def test_lookups_skip_a_checkpoint_that_fails_verification_and_set_it_aside_only_when_resuming(tmp_path, capsys):
    checkpoints = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        _checkpoint(checkpoints / f"step_{step}", str(step))
    (checkpoints / "step_3" / "trainer_state.json").unlink()
    (checkpoints / "step_4").mkdir()  # an upload cut short: no marker
    assert ck.latest_checkpoint(checkpoints) == checkpoints / "step_2"
    assert f"skipping checkpoint {checkpoints / 'step_3'}: trainer_state.json: missing" in capsys.readouterr().err
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_1", "step_2", "step_3", "step_4"]  # moved nothing

    assert ck.resolve_resume("auto", checkpoints) == checkpoints / "step_2"
    err = capsys.readouterr().err
    assert "step_4 has no COMPLETE marker" in err and "resuming from step_2" in err
    pid = os.getpid()
    assert sorted(p.name for p in checkpoints.iterdir()) == [f".step_3.bad-{pid}", f".step_4.bad-{pid}", "step_1", "step_2"]
    ck.remove_stale(checkpoints)  # kept while this process runs (for a look) ...
    assert len(list(checkpoints.glob(".*"))) == 2
    for p in checkpoints.glob(".*"):  # ... and removed once it is gone
        p.rename(checkpoints / p.name.replace(f"-{pid}", "-999999999"))
    ck.remove_stale(checkpoints)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_1", "step_2"]


def test_resume_by_path_verifies_the_folder(tmp_path):
    folder = _checkpoint(tmp_path / "step_5", "x")
    assert ck.resolve_resume(str(folder), tmp_path / "elsewhere") == folder.resolve()
    (folder / "policy" / "optimizer.pt").write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match="fails verification: policy/optimizer.pt: size 0 bytes"):
        ck.resolve_resume(str(folder), tmp_path / "elsewhere")


class _RayTaskError(RuntimeError):
    """Like Ray's RayTaskError: the worker's exception rides along as `.cause`."""

    def __init__(self, cause: BaseException):
        super().__init__(f"ray::PolicyWorker.save() failed: {cause!r}")
        self.cause = cause


def test_running_out_of_space_is_recognised_however_the_writer_reports_it(tmp_path):
    import errno

    ok = [tmp_path]
    assert ck.space_code(OSError(errno.ENOSPC, "No space left on device"), ok) == errno.ENOSPC
    assert ck.space_code(_RayTaskError(OSError(errno.EDQUOT, "Disk quota exceeded")), ok) == errno.EDQUOT
    safetensors_says = RuntimeError("Error while serializing: I/O error: File too large (os error 27)")
    assert ck.space_code(safetensors_says, ok) == errno.EFBIG
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    except RuntimeError as chained:  # torch.save: the errno only in the context, if at all
        assert ck.space_code(chained, ok) == errno.ENOSPC
    assert ck.space_code(RuntimeError("unexpected pos 704 vs 598"), ok) is None  # a roomy disk: not space
    assert ck.space_code(UserError("bad value"), ok) is None
    assert ck.space_code(KeyboardInterrupt(), ok) is None


def test_a_save_out_of_space_names_the_folder_and_the_space_and_keeps_the_previous(tmp_path):
    import errno

    checkpoints = tmp_path / "checkpoints"
    previous = _checkpoint(checkpoints / "step_1", "p")
    with pytest.raises(ck.OutOfSpaceError) as err, ck.staging(checkpoints / "step_2") as tmp:
        (tmp / "half.bin").write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError) and isinstance(err.value, UserError)
    assert f"not enough disk space to save {checkpoints / 'step_2'}: No space left on device (ENOSPC)" in message
    assert f"It needs about {ck._human(ck.folder_bytes(previous))} (the size of step_1)" in message
    assert f"free on the file system of {checkpoints}" in message and f"{previous} is untouched" in message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_1"] and ck.verify(previous) == []


def test_prune_never_removes_the_checkpoint_just_saved(tmp_path):
    for step in (8, 10, 2):  # a run started over (checkpoint.resume: never) beside an earlier attempt's
        _checkpoint(tmp_path / f"step_{step}", str(step))
    assert ck.prune(tmp_path, keep_last=2, protect=tmp_path / "step_2") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_10", "step_2", "step_8"]
