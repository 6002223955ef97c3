"""Where runs live: the storage root, and the config's paths resolved against it.

A stage submitted with `ray job submit --working-dir .` runs in Ray's temporary copy of the
working directory; a run folder written there disappears with the Ray session and the next
stage's job cannot find it. So every path a config names is resolved, when the config loads,
against a storage root that outlives the job:

- outputs (`logging.output_dir`, synthetic data folders): `<root>/<path>`;
- inputs (model folders, data files): `<root>/<path>` when it exists there, else
  `<cwd>/<path>` when it exists there (a data file shipped in the job's working directory),
  else `<root>/<path>` (something an earlier stage of the same chain will write).

Absolute paths are kept. The resolved config (saved in every run folder) names absolute paths,
and so does every message built from it. Where the root is: `qwen25_rl.paths.storage_root`.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel


@dataclass(frozen=True)
class PathRole:
    role: str  # "input" | "output"


InputPath = Annotated[str, PathRole("input")]
OutputPath = Annotated[str, PathRole("output")]


def _role_of(annotation: Any, metadata: list[Any] = ()) -> str | None:  # type: ignore[assignment]
    for m in metadata:
        if isinstance(m, PathRole):
            return m.role
    if typing.get_origin(annotation) is Annotated:
        for m in typing.get_args(annotation)[1:]:
            if isinstance(m, PathRole):
                return m.role
    for inner in typing.get_args(annotation):  # list[InputPath], InputPath | None
        role = _role_of(inner)
        if role:
            return role
    return None


def resolve_path(value: str, role: str, root: Path, cwd: Path) -> str:
    """One config path, resolved as the module docstring says."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    stored = root / p
    if role == "input" and not stored.exists() and (cwd / p).exists():
        return str((cwd / p).resolve())
    return str(stored)


def resolve_config_paths(config: BaseModel, root: Path, cwd: Path | None = None) -> None:
    """Resolve (in place) every field typed `InputPath` / `OutputPath` in `config` and its
    sections, lists of sections included."""
    cwd = Path.cwd() if cwd is None else cwd
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        role = _role_of(field.annotation, field.metadata)
        if role is not None and value is not None:
            if isinstance(value, str):
                setattr(config, name, resolve_path(value, role, root, cwd))
            elif isinstance(value, list):
                setattr(config, name, [resolve_path(v, role, root, cwd) for v in value])
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                resolve_config_paths(item, root, cwd)


def in_ray_job_copy(cwd: Path) -> bool:
    """True inside the copy of the working directory that `ray job submit --working-dir`
    unpacks under Ray's session folder (…/runtime_resources/working_dir_files/_ray_pkg_…)."""
    return "runtime_resources" in cwd.parts or "working_dir_files" in cwd.parts


STORAGE_ENV = "QWEN25_RL_STORAGE"
# Outside Ray's temporary folders, like Ray Train's own default (~/ray_results).
JOB_STORAGE_DEFAULT = "~/qwen25-rl"


def storage_root(setting: str | None, cwd: Path | None = None) -> Path:
    """The folder relative run and data paths resolve against: `logging.storage_path`, else
    $QWEN25_RL_STORAGE, else (inside a submitted job's working-directory copy) ~/qwen25-rl,
    else the current directory. On a multi-node cluster point it at a shared filesystem."""
    cwd = Path.cwd() if cwd is None else cwd
    chosen = setting or os.environ.get(STORAGE_ENV)
    if chosen:
        p = Path(chosen).expanduser()
        return p if p.is_absolute() else (cwd / p).resolve()
    if in_ray_job_copy(cwd):
        return Path(JOB_STORAGE_DEFAULT).expanduser()
    return cwd.resolve()
