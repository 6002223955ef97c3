"""Run state written safely: the one home for publishing folders, the initial model, checkpoint
completeness, resume lookup and RNG state. Every stage uses these; none has its own copy.

Publishing. A folder becomes visible only complete: it is written under a temporary name beside
its place (`.NAME.partial-PID`), every file and folder in it is fsynced, then it is renamed into
place. Replacing a folder that exists (`final/`, a data cache) swaps the two atomically with
renameat2(RENAME_EXCHANGE) and then removes the old one, so a process killed at any point leaves
the old or the new folder, never none. Where the kernel or file system cannot exchange (not
Linux, some network file systems) the old folder is first renamed to `.NAME.old-PID`; `recover`
(which every lookup here calls) renames it back if the process died before the new one arrived.
Leftover `.partial-` folders of dead processes are removed by `remove_stale`.

Checkpoints. `checkpoints/step_N/` is complete when it holds the marker file `COMPLETE`, written
last inside the temporary folder; a folder without it (or a temporary one) is never resumed from.

RNG. `rng_state()` captures Python's, NumPy's, torch's CPU and every CUDA device's generator;
`restore_rng_state` puts back what was saved (a CPU-only checkpoint on a GPU run leaves the CUDA
generators seeded as they were).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qwen25_rl.errors import UserError

COMPLETE = "COMPLETE"
INITIAL_MODEL = "initial_model"
_PARTIAL = ".partial-"
_OLD = ".old-"
# Test seam for the crash tests (tests/unit/test_checkpointing.py): SIGKILL this process at the
# named point of a publish. Unset in every real run.
CRASH_ENV = "QWEN25_RL_CRASH_AT"


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# files and folders


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under `path` (and `path` itself)."""
    path = Path(path)
    if path.is_file():
        _fsync(path, os.O_RDONLY)
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            _fsync(Path(root) / name, os.O_RDONLY)
        _fsync(Path(root), os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: Path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:  # a symlink to nowhere, a file removed meanwhile: nothing to make durable
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a file via a temporary sibling, fsync it, rename it into place, fsync the folder:
    readers see the old content or the new, never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_PARTIAL}{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)


_RENAME_EXCHANGE = 2
_renameat2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    if _renameat2 is False:
        return False
    at_fdcwd = -100
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # this kernel or file system cannot
        return False
    raise OSError(err, os.strerror(err), str(a))


def publish(tmp: Path, dest: Path) -> Path:
    """Move the finished folder `tmp` to `dest` (module doc: fsync, then rename or atomic swap)."""
    tmp, dest = Path(tmp), Path(dest)
    fsync_tree(tmp)
    _crash_point("publish:synced")
    recover(dest)
    if not dest.exists():
        os.rename(tmp, dest)
    elif _exchange(tmp, dest):
        _crash_point("publish:exchanged")
        shutil.rmtree(tmp)  # now the old folder
    else:
        old = dest.with_name(f".{dest.name}{_OLD}{os.getpid()}")
        os.rename(dest, old)
        _crash_point("publish:moved-aside")
        os.rename(tmp, dest)
        shutil.rmtree(old)
    _fsync(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    return dest


def recover(dest: Path) -> None:
    """Put back a folder a killed publish had moved aside (the fallback path of `publish`)."""
    dest = Path(dest)
    if dest.exists() or not dest.parent.is_dir():
        return
    olds = sorted(dest.parent.glob(f".{dest.name}{_OLD}*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], dest)


def remove_stale(parent: Path) -> list[Path]:
    """Remove temporary folders and files left in `parent` by processes that no longer run."""
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        if not p.name.startswith(".") or (_PARTIAL not in p.name and _OLD not in p.name):
            continue
        if _OLD in p.name and not (parent / p.name[1:].split(_OLD)[0]).exists():
            continue  # the only copy of a folder whose publish was killed: recover() takes it
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """Write a folder for `dest` in the yielded temporary folder; it is published when the block
    ends normally and removed when it raises."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}{_PARTIAL}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _crash_point("publish:written")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, dest)


# ---------------------------------------------------------------------------------------------
# the initial model


def ensure_initial_model(run_path: Path, build: Callable[[Path], None]) -> Path:
    """`run_path/initial_model`: built once (by `build(folder)`, which writes an HF model folder)
    and reused by every restart, so all workers and every resume start from the same weights."""
    dest = Path(run_path) / INITIAL_MODEL
    recover(dest)
    if not (dest / "config.json").is_file():
        with staging(dest) as tmp:
            build(tmp)
    return dest


# ---------------------------------------------------------------------------------------------
# checkpoints


def mark_complete(folder: Path) -> None:
    atomic_write(Path(folder) / COMPLETE, "")


def is_complete(folder: Path) -> bool:
    return (Path(folder) / COMPLETE).is_file()


def checkpoint_step(folder: Path) -> int:
    return int(Path(folder).name.split("_", 1)[1])


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The complete `step_N` folders under `checkpoints`, oldest first."""
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.glob("step_*") if p.name[5:].isdigit() and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(checkpoints: Path) -> Path | None:
    done = complete_checkpoints(checkpoints)
    return done[-1] if done else None


def resolve_resume(mode: str, checkpoints: Path) -> Path | None:
    """`checkpoint.resume`: "never" -> None, "auto" -> the newest complete checkpoint in this
    run (None for a fresh run), else a checkpoint folder, which must be complete."""
    if mode == "never":
        return None
    if mode == "auto":
        return latest_checkpoint(checkpoints)
    path = Path(mode).expanduser()
    if not path.is_dir():
        raise UserError(f"checkpoint.resume: {path} does not exist (a checkpoint folder, or auto / never)")
    if not is_complete(path):
        raise UserError(f"checkpoint.resume: {path} is not a complete checkpoint (no {COMPLETE} marker)")
    return path.resolve()


def prune(checkpoints: Path, keep_last: int | None) -> list[Path]:
    """Remove all but the newest `keep_last` complete checkpoints (None or 0: keep all)."""
    if not keep_last:
        return []
    old = complete_checkpoints(checkpoints)[:-keep_last]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old


# ---------------------------------------------------------------------------------------------
# RNG state


def rng_state() -> dict[str, Any]:
    """Every generator a training step draws from: Python, NumPy, torch CPU, each CUDA device."""
    import random

    import numpy as np
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng_state(path: Path) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(rng_state(), buf)
    atomic_write(path, buf.getvalue())


def load_rng_state(path: Path) -> None:
    import torch

    restore_rng_state(torch.load(path, weights_only=False))
