"""Run state written safely: the one home for publishing folders, the initial model, checkpoint
completeness and verification, resume lookup, running out of disk space, and RNG state. Every
stage uses these; none has its own copy.

Publishing. A folder becomes visible only complete: it is written under a temporary name beside
its place (`.NAME.partial-PID`), its manifest is written last (below), every file and folder in
it is fsynced, then it is renamed into place. Replacing a folder that exists (`final/`, a data
cache) swaps the two atomically with renameat2(RENAME_EXCHANGE) and then removes the old one, so
a process killed at any point leaves the old or the new folder, never none. Where the kernel or
file system cannot exchange (not Linux, some network file systems) the old folder is first
renamed to `.NAME.old-PID`; `recover` (which every lookup here calls) renames it back if the
process died before the new one arrived. Leftover `.partial-` folders of dead processes are
removed by `remove_stale` (every lookup calls it, through `tidy`).

Manifest and completeness. The file `COMPLETE` of a published folder is its manifest: JSON with
every other file's relative path, size and sha256, written after all of them (`write_manifest`;
`staging` does it for every folder it publishes; a Ray Train checkpoint gets it from its
workers, pretrain.worker). `is_complete` means "the marker is there"; `verify` checks the files
against it: sizes always (stat only), contents by sha256 when asked (the resume default). An
empty or `ok` marker is a checkpoint from before manifests: complete, not verifiable.

Resume. `resolve_resume` ("auto") takes the newest checkpoint that verifies. One that does not
is skipped with a message naming the file and what is wrong (missing, size differs, hash
differs) and moved aside (`.step_N.bad-PID`, removed by a later lookup once this process is
gone), so it is neither counted by pruning nor mistaken for the previous checkpoint; a `step_N`
folder without the marker (a Ray Train upload cut short) is moved aside too. Checkpoints that
exist but none of which verifies stop the run with an error naming them: it never silently
starts from scratch (`checkpoint.resume: never` is how a user chooses to start over).

Out of space. A save that fails with ENOSPC / EDQUOT, or EFBIG (a file over RLIMIT_FSIZE), or
fails while its file system is full (torch.save loses the errno), raises `OutOfSpaceError`
naming the folder, the space it needs and the space free; the partial folder is removed and the
previous checkpoint is untouched (pruning runs only after a new checkpoint is published).

Crash points (`QWEN25_RL_CRASH_AT`, the chaos tests' seam; unset in every real run), in the
order a save passes them: `save:before-files`, `save:mid-file` (half of a file written into a
folder being published), `publish:written` / `save:before-manifest`, `publish:synced` /
`save:before-rename`, then `publish:exchanged` or `publish:moved-aside`.

RNG. `rng_state()` captures Python's, NumPy's, torch's CPU and every CUDA device's generator;
`restore_rng_state` puts back what was saved (a CPU-only checkpoint on a GPU run leaves the CUDA
generators seeded as they were).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from qwen25_rl.errors import UserError

COMPLETE = "COMPLETE"
MANIFEST_FORMAT = "qwen25-rl-manifest/1"
INITIAL_MODEL = "initial_model"
_PARTIAL = ".partial-"
_OLD = ".old-"
_BAD = ".bad-"
# Test seam for the crash tests (tests/unit/test_checkpointing.py, tests/chaos/): SIGKILL this
# process at the named point of a save. Unset in every real run.
CRASH_ENV = "QWEN25_RL_CRASH_AT"
# Files hashed at once (hashlib releases the GIL on large reads and updates).
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))
# Below this much room a file system counts as full when a save fails (see `out_of_space`).
FULL_BELOW_BYTES = 16 * 2**20
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_SPACE_MARKERS = {
    "no space left on device": errno.ENOSPC,
    "storagefull": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "file too large": errno.EFBIG,
    "filetoolarge": errno.EFBIG,
}


class CheckpointError(UserError):
    """No checkpoint can be resumed from: the message names each one and what is wrong."""


class OutOfSpaceError(UserError, OSError):
    """A save ran out of disk space (or over RLIMIT_FSIZE); `errno` is ENOSPC, EDQUOT or EFBIG."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.errno = code


def _crash_point(*names: str) -> None:
    if os.environ.get(CRASH_ENV) in names:
        os.kill(os.getpid(), signal.SIGKILL)


def warn(message: str) -> None:
    """One warning line on stderr (what a lookup skipped or moved aside)."""
    print(f"qwen25-rl: warning: {message}", file=sys.stderr, flush=True)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


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


def _inside_partial(path: Path) -> bool:
    return any(_PARTIAL in part for part in Path(path).parent.parts)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a file via a temporary sibling, fsync it, rename it into place, fsync the folder:
    readers see the old content or the new, never half a file (a failed write removes its
    temporary file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_PARTIAL}{os.getpid()}")
    view = memoryview(data.encode() if isinstance(data, str) else data)
    try:
        with open(tmp, "wb") as f:
            half = len(view) // 2
            f.write(view[:half])
            if os.environ.get(CRASH_ENV) == "save:mid-file" and _inside_partial(path):
                f.flush()
                _crash_point("save:mid-file")
            f.write(view[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
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
    _crash_point("publish:synced", "save:before-rename")
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
    """Remove temporary folders and files left in `parent` by processes that no longer run
    (and folders set aside by `set_aside` in processes that ended)."""
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        kind = next((k for k in (_PARTIAL, _OLD, _BAD) if k in p.name), None)
        if not p.name.startswith(".") or kind is None:
            continue
        if kind == _OLD and not (parent / p.name[1:].split(_OLD)[0]).exists():
            continue  # the only copy of a folder whose publish was killed: recover() takes it
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) != os.getpid() or kind == _BAD) and _pid_alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def tidy(parent: Path) -> list[Path]:
    """What every lookup does first: put back folders a killed publish moved aside, then remove
    what dead processes left (`recover`, `remove_stale`)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    for name in {p.name[1:].split(_OLD)[0] for p in parent.glob(f".*{_OLD}*")}:
        recover(parent / name)
    return remove_stale(parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staging(dest: Path, *, manifest: bool = True) -> Iterator[Path]:
    """Write a folder for `dest` in the yielded temporary folder. When the block ends normally
    its manifest (`COMPLETE`) is written last and the folder is published; when the block (or
    the manifest, or the publish) raises, the temporary folder is removed and a failure for lack
    of space becomes an `OutOfSpaceError` naming `dest`, the space needed and the space free."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}{_PARTIAL}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _crash_point("save:before-files")
        yield tmp
        _crash_point("publish:written")
        if manifest:
            write_manifest(tmp)
        publish(tmp, dest)
    except BaseException as e:
        code = space_code(e, [dest.parent, tmp])
        written = _tree_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        recover(dest)
        if code is None:
            raise
        raise space_error(code, dest, written, [dest.parent]) from e


# ---------------------------------------------------------------------------------------------
# manifests: what a published folder holds, checked at load


def _files(folder: Path) -> list[str]:
    """Relative paths (POSIX) of the regular files under `folder`, but its own manifest."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel != COMPLETE:
                out.append(rel)
    return out


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        if hasattr(hashlib, "file_digest"):  # Python 3.11+
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()


def _hash_all(paths: list[Path]) -> list[str]:
    if len(paths) <= 1 or HASH_THREADS == 1:
        return [_sha256(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(HASH_THREADS, len(paths))) as pool:
        return list(pool.map(_sha256, paths))


def manifest_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256"}} of every file under `folder` (its COMPLETE aside)."""
    folder = Path(folder)
    rels = _files(folder)
    hashes = _hash_all([folder / r for r in rels])
    return {r: {"size": (folder / r).stat().st_size, "sha256": h} for r, h in zip(rels, hashes)}


def merge_manifest_entries(parts: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One manifest from the parts several writers made of their own files (Ray Train ranks
    uploading into one folder); a path two parts give different contents is an error."""
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for rel, entry in part.items():
            if rel in merged and merged[rel] != entry:
                raise RuntimeError(f"two writers of one checkpoint wrote {rel} with different contents ({merged[rel]} vs {entry})")
            merged[rel] = entry
    return dict(sorted(merged.items()))


def write_manifest(folder: Path, files: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write `folder/COMPLETE`: the manifest of every file in the folder (`files`, or computed
    now). The last file of a save: its presence marks the folder complete."""
    folder = Path(folder)
    _crash_point("save:before-manifest")
    files = manifest_entries(folder) if files is None else files
    doc = {"format": MANIFEST_FORMAT, "bytes": sum(e["size"] for e in files.values()), "files": files}
    atomic_write(folder / COMPLETE, json.dumps(doc, indent=1) + "\n")
    return doc


def mark_complete(folder: Path) -> None:
    """Mark a finished folder complete: its manifest (`write_manifest`)."""
    write_manifest(folder)


def is_complete(folder: Path) -> bool:
    """The folder holds its completeness marker (what it claims; `verify` checks the claim)."""
    return (Path(folder) / COMPLETE).is_file()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest in `folder/COMPLETE`; None for a marker from before manifests (empty or
    `ok`). Raises ValueError when the marker is neither."""
    text = (Path(folder) / COMPLETE).read_text(errors="replace")
    if text.strip() in ("", "ok"):
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a readable manifest ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("files"), dict):
        raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
    return doc


def verify(folder: Path, *, hashes: bool = True) -> list[str]:
    """What is wrong with a published folder, file by file ([] when it verifies): its marker
    missing or unreadable, a file missing, a size that differs from its manifest (checked
    always, stat only), contents whose sha256 differs (with `hashes`)."""
    folder = Path(folder)
    if not (folder / COMPLETE).is_file():
        return [f"{COMPLETE}: missing (the save did not finish)"]
    try:
        doc = read_manifest(folder)
    except (OSError, ValueError) as e:
        return [f"{COMPLETE}: {e}"]
    if doc is None:
        return []  # written before manifests: complete, nothing to check against
    problems, to_hash = [], []
    for rel, entry in doc["files"].items():
        try:
            size = (folder / rel).stat().st_size
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        if size != entry["size"]:
            problems.append(f"{rel}: size {size} bytes, the manifest says {entry['size']}")
        else:
            to_hash.append(rel)
    if hashes and not problems:
        for rel, got in zip(to_hash, _hash_all([folder / r for r in to_hash])):
            if got != doc["files"][rel]["sha256"]:
                problems.append(f"{rel}: sha256 {got[:12]}… differs from the manifest's {doc['files'][rel]['sha256'][:12]}…")
    return problems


def check_published(folder: Path, what: str) -> None:
    """A folder this platform published (it carries a `COMPLETE` manifest: a stage's `final/`, a
    checkpoint) must verify before a stage reads it: a model damaged after its save is named,
    file by file, never loaded. Folders without a marker (a model from elsewhere) pass."""
    folder = Path(folder)
    if not is_complete(folder):
        return
    problems = verify(folder)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"{what} {folder} does not match the manifest it was saved with ({COMPLETE}): "
            + "; ".join(problems[:5])
            + more
            + ". It was damaged after it was saved: run the stage that wrote it again, or restore a copy"
        )


def folder_bytes(folder: Path) -> int:
    """A published folder's size: its manifest's total, else what is on disk."""
    try:
        doc = read_manifest(folder)
        if doc is not None:
            return int(doc["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return _tree_bytes(folder)


def _tree_bytes(path: Path | None) -> int:
    total = 0
    if path is None:
        return 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


# ---------------------------------------------------------------------------------------------
# out of space


def _errno_of(e: BaseException) -> int | None:
    if isinstance(e, OSError) and e.errno in _SPACE_ERRNOS:
        return e.errno
    text = str(e).lower()
    compact = text.replace(" ", "")
    for marker, code in _SPACE_MARKERS.items():
        if marker in text or marker in compact:
            return code
    return None


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        todo += [x.__cause__, x.__context__, getattr(x, "cause", None)]  # Ray's RayTaskError.cause


def _fs_free(path: Path) -> int | None:
    """Bytes this process may still write on `path`'s file system (root may use the reserve)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def _fsize_limit() -> int | None:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _largest_file(path: Path | None) -> int:
    largest = 0
    if path is not None:
        for root, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    largest = max(largest, (Path(root) / name).lstat().st_size)
    return largest


def space_code(e: BaseException, paths: Iterable[Path | None]) -> int | None:
    """ENOSPC / EDQUOT / EFBIG when the save that raised `e` (writing under `paths`) failed for
    lack of space, else None. Call it before removing what the save wrote. Besides the errno
    (also inside a Ray task's error, or in the message of safetensors' error), a failure while
    a file system under `paths` is full, or while a file there has reached RLIMIT_FSIZE, counts:
    torch.save reports a short write without its errno."""
    if isinstance(e, OutOfSpaceError):
        return None  # already said
    for x in _chain(e):
        code = _errno_of(x)
        if code is not None:
            return code
    if not isinstance(e, Exception) or isinstance(e, UserError):
        return None  # KeyboardInterrupt, SystemExit, a message for the user: not a write that failed
    paths = [Path(p) for p in paths if p is not None]
    limit = _fsize_limit()
    if limit is not None and any(_largest_file(p) >= limit for p in paths if p.is_dir()):
        return errno.EFBIG
    if any((free := _fs_free(p)) is not None and free < FULL_BELOW_BYTES for p in paths):
        return errno.ENOSPC
    return None


def _previous(dest: Path) -> Path | None:
    """What a save of `dest` leaves in place: `dest` itself (a replacement) or, for a checkpoint,
    the newest complete one beside it."""
    if dest.is_dir():
        return dest
    if dest.name.startswith("step_"):
        done = [p for p in complete_checkpoints(dest.parent) if p != dest]
        return done[-1] if done else None
    return None


def space_error(code: int, dest: Path, written: int, paths: Iterable[Path] = ()) -> OutOfSpaceError:
    """The error of a save of `dest` that ran out of space, after its partial files are removed:
    what failed, the space it needs (the previous checkpoint's or the replaced folder's size;
    at least what was written) and the space free."""
    dest = Path(dest)
    previous = _previous(dest)
    if code == errno.EFBIG:
        limit = _fsize_limit()
        why = "a file reached this process's file size limit (EFBIG" + (f", RLIMIT_FSIZE {_human(limit)})" if limit else ")")
    else:
        why = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    if previous is not None and folder_bytes(previous) >= written:
        need = f"about {_human(folder_bytes(previous))} (the size of {previous.name})"
    else:
        need = f"more than {_human(written)} (written before the failure)"
    frees = []
    for p in dict.fromkeys([dest.parent, *map(Path, paths)]):
        free = _fs_free(p)
        if free is not None:
            frees.append(f"{_human(free)} free on the file system of {p}")
    kept = f"; {previous} is untouched" if previous is not None else ""
    return OutOfSpaceError(
        f"not enough disk space to save {dest}: {why}. It needs {need}; {', '.join(frees) or 'free space unknown'}. "
        f"The partial folder was removed{kept}. Free some space (or keep fewer checkpoints: checkpoint.keep_last), "
        "then run again: checkpoint.resume: auto continues from the newest complete checkpoint.",
        code,
    )


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


def checkpoint_step(folder: Path) -> int:
    return int(Path(folder).name.split("_", 1)[1])


def _step_folders(checkpoints: Path) -> list[Path]:
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        return []
    return sorted((p for p in checkpoints.glob("step_*") if p.name[5:].isdigit() and p.is_dir()), key=checkpoint_step)


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The `step_N` folders under `checkpoints` that hold their marker, oldest first (complete
    as written; `verify` says whether they still are)."""
    return [p for p in _step_folders(checkpoints) if is_complete(p)]


def latest_checkpoint(checkpoints: Path, *, hashes: bool = True) -> Path | None:
    """The newest checkpoint that verifies (sizes, and sha256 with `hashes`); each newer one that
    does not is skipped with a warning naming the file and what is wrong. Moves nothing."""
    tidy(checkpoints)
    for folder in reversed(complete_checkpoints(checkpoints)):
        problems = verify(folder, hashes=hashes)
        if not problems:
            return folder
        warn(f"skipping checkpoint {folder}: {'; '.join(problems)}")
    return None


def set_aside(folder: Path, why: str) -> Path:
    """Rename a folder no lookup may use to `.NAME.bad-PID` beside it (kept while this process
    runs, for a look; removed by the first lookup after it ends) and say so."""
    folder = Path(folder)
    aside = folder.with_name(f".{folder.name}{_BAD}{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(folder, aside)
    warn(f"{why}; moved it aside to {aside}")
    return aside


def newest_verified_checkpoint(checkpoints: Path, *, hashes: bool = True) -> Path | None:
    """What `checkpoint.resume: auto` resumes from: the newest checkpoint that verifies, None in a
    run without checkpoints. Folders that cannot be used are moved aside (`set_aside`): a
    `step_N` without its marker (an upload cut short), and each checkpoint that fails
    verification, once one that verifies is found. When checkpoints exist and none verifies,
    raises CheckpointError naming each and what is wrong (nothing is moved)."""
    checkpoints = Path(checkpoints)
    tidy(checkpoints)
    for folder in _step_folders(checkpoints):
        if not is_complete(folder):
            set_aside(folder, f"checkpoint folder {folder} has no {COMPLETE} marker: its save did not finish")
    failed: list[tuple[Path, list[str]]] = []
    for folder in reversed(complete_checkpoints(checkpoints)):
        problems = verify(folder, hashes=hashes)
        if not problems:
            for bad, why in failed:
                set_aside(bad, f"checkpoint {bad} fails verification ({'; '.join(why)}); resuming from {folder.name}")
            return folder
        warn(f"skipping checkpoint {folder}: {'; '.join(problems)}")
        failed.append((folder, problems))
    if failed:
        listing = "\n".join(f"  {f}: {'; '.join(p)}" for f, p in failed)
        raise CheckpointError(
            f"{checkpoints} holds {len(failed)} checkpoint(s) and none verifies:\n{listing}\n"
            "Nothing was resumed. To start this run over from the initial model set checkpoint.resume: never "
            "(or use a new logging.run_name); to resume from a copy kept elsewhere, set checkpoint.resume to its folder."
        )
    return None


def resolve_resume(mode: str, checkpoints: Path, *, hashes: bool = True) -> Path | None:
    """`checkpoint.resume`: "never" -> None (start over), "auto" -> the newest checkpoint of this
    run that verifies (`newest_verified_checkpoint`; None for a fresh run), else a checkpoint
    folder, which must be complete and verify. Every mode first tidies `checkpoints`."""
    tidy(checkpoints)
    if mode == "never":
        return None
    if mode == "auto":
        return newest_verified_checkpoint(checkpoints, hashes=hashes)
    path = Path(mode).expanduser()
    if not path.is_dir():
        raise UserError(f"checkpoint.resume: {path} does not exist (a checkpoint folder, or auto / never)")
    if not is_complete(path):
        raise UserError(f"checkpoint.resume: {path} is not a complete checkpoint (no {COMPLETE} marker)")
    problems = verify(path, hashes=hashes)
    if problems:
        raise CheckpointError(f"checkpoint.resume: {path} fails verification: {'; '.join(problems)}")
    return path.resolve()


def prune(checkpoints: Path, keep_last: int | None, *, protect: Path | None = None) -> list[Path]:
    """Remove all but the newest `keep_last` complete checkpoints (None or 0: keep all), never
    `protect` (the checkpoint just saved, even where newer-numbered ones of an earlier attempt
    remain). Call it only after the new one is published: the previous checkpoint must outlive
    every save that has not finished."""
    if not keep_last:
        return []
    old = [p for p in complete_checkpoints(checkpoints)[:-keep_last] if protect is None or p != Path(protect)]
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
