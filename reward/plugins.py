"""Custom reward functions: load `path/to/file.py:fn` or `package.module:fn` and call it in
the style its author wrote it for.

Call styles (`style:` in the config; `auto` tells them apart by parameter names):

- `sample`   `fn(sample: RewardSample) -> float | RewardOutput | dict | None`   (ours)
- `verl`     `compute_score(data_source, solution_str, ground_truth, extra_info=None)`
             -> float or {"score": float, ...}                                      (veRL)
- `trl`      `f(prompts, completions, **columns) -> list[float | None]`          (TRL)
             columns: every key of the samples' `extra`, plus `sample.answer` under
             `answer_column` (TRL recipes call it `solution` or `answer`); with
             `conversational` the completions are [[{"role": "assistant", "content": ...}]]
             and the prompts [[{"role": "user", ...}]], as TRL passes chat datasets
- `openrlhf` `reward_func(queries, prompts, labels)` -> tensor / list, or
             {"rewards": ..., ...}; queries are prompt + response                 (OpenRLHF)

`sample` and `verl` are called once per sample, `trl` and `openrlhf` once per batch.
Any of them may be `async def`; the samples of a batch then run concurrently.

Everything that can be checked before the first step is checked when the plugin is loaded
(`load_plugin`): the file or module exists and imports, the name is a callable, and its
signature accepts the call its style makes. The error says which of these failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qwen25_rl.errors import UserValueError
from qwen25_rl.reward.types import FunctionOutcome, RewardSample, coerce_output, describe_exception

Style = Literal["auto", "sample", "verl", "trl", "openrlhf"]
STYLES = ("sample", "verl", "trl", "openrlhf")
BATCH_STYLES = ("trl", "openrlhf")


class PluginError(UserValueError):
    """A custom reward cannot be used: bad path, failed import, missing name or bad signature."""


# ---------------------------------------------------------------------------------------------
# finding the function


def split_spec(spec: str) -> tuple[str, str, bool]:
    """'a/b.py:fn' -> ('a/b.py', 'fn', True); 'pkg.mod:fn' -> ('pkg.mod', 'fn', False)."""
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise PluginError(f"custom reward {spec!r}: expected 'path/to/file.py:function' or 'package.module:function'")
    where, _, name = spec.rpartition(":")
    if not where or not name or not name.isidentifier():
        raise PluginError(
            f"custom reward {spec!r}: expected 'path/to/file.py:function' or 'package.module:function' (function must be a Python name)"
        )
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    return where, name, is_file


def resolve_spec(spec: str, base_dir: str | Path | None = None) -> str:
    """Make a file spec absolute (relative to `base_dir`, default the current folder) and check
    that the file or module can be found, without importing it."""
    where, name, is_file = split_spec(spec)
    if is_file:
        p = Path(where).expanduser()
        if not p.is_absolute():
            p = Path(base_dir or os.getcwd()) / p
        p = p.resolve()
        if not p.is_file():
            raise PluginError(
                f"custom reward {spec!r}: file {p} not found"
                + ("" if Path(where).is_absolute() else f" (relative paths are taken from {base_dir or os.getcwd()})")
            )
        return f"{p}:{name}"
    try:
        found = importlib.util.find_spec(where)
    except ModuleNotFoundError as e:  # the parent package is missing
        raise PluginError(f"custom reward {spec!r}: module {where!r} not found ({e}; is it installed or on PYTHONPATH?)") from e
    except (ImportError, ValueError) as e:  # a parent package that fails to import
        raise PluginError(f"custom reward {spec!r}: cannot look up module {where!r}: {describe_exception(e)}") from e
    if found is None:
        raise PluginError(f"custom reward {spec!r}: module {where!r} not found (is it installed or on PYTHONPATH?)")
    return spec


def _import_file(path: Path) -> Any:
    # A stable, unique module name per file so two plugins named rewards.py do not collide
    # and pickling by reference (e.g. into a Ray worker) finds the same module again.
    mod_name = f"qwen25_rl_reward_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"custom reward file {path} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    # Plugins often import helpers that sit next to them.
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[mod_name]
        tb = "".join(traceback.format_exception_only(type(e), e)).strip()
        raise PluginError(f"importing custom reward file {path} failed: {tb}") from e
    return module


def load_callable(spec: str, base_dir: str | Path | None = None) -> Callable:
    """The function named by `spec`; PluginError says exactly what is wrong."""
    resolved = resolve_spec(spec, base_dir)
    where, name, is_file = split_spec(resolved)
    if is_file:
        module = _import_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except BaseException as e:
            tb = "".join(traceback.format_exception_only(type(e), e)).strip()
            raise PluginError(f"importing module {where!r} for custom reward {spec!r} failed: {tb}") from e
    if not hasattr(module, name):
        names = sorted(
            k
            for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        raise PluginError(
            f"custom reward {spec!r}: {where} has no attribute {name!r}; functions defined there: {', '.join(names) or '(none)'}"
        )
    fn = getattr(module, name)
    if not callable(fn):
        raise PluginError(f"custom reward {spec!r}: {name!r} is a {type(fn).__name__}, not a function")
    return fn


# ---------------------------------------------------------------------------------------------
# call styles


def _params(fn: Callable) -> tuple[list[inspect.Parameter], bool]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise PluginError(f"cannot read the signature of {fn!r}: {e}") from e
    ps = list(sig.parameters.values())
    named = [p for p in ps if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ps)
    return named, var_kw


def detect_style(fn: Callable) -> str:
    """Which framework's call style `fn` was written for, from its parameter names."""
    named, _ = _params(fn)
    names = [p.name for p in named]
    if {"solution_str", "ground_truth"} <= set(names):
        return "verl"
    if names[:3] == ["queries", "prompts", "labels"]:
        return "openrlhf"
    if "completions" in names[:2]:
        return "trl"
    required = [p for p in named if p.default is inspect.Parameter.empty]
    if len(required) == 1 and required[0].kind is not inspect.Parameter.KEYWORD_ONLY:
        return "sample"
    raise PluginError(
        f"cannot tell the call style of {_describe_fn(fn)}: name its parameters like one of "
        "sample: fn(sample) | verl: compute_score(data_source, solution_str, ground_truth, extra_info) | "
        "trl: f(prompts, completions, **columns) | openrlhf: reward_func(queries, prompts, labels); "
        "or set params.style"
    )


def _describe_fn(fn: Callable) -> str:
    try:
        return f"{getattr(fn, '__qualname__', fn)}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return repr(fn)


def _check_binds(fn: Callable, style: str, args: tuple, kwargs: dict) -> None:
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        raise PluginError(f"{_describe_fn(fn)} cannot be called in the {style!r} style ({e})") from e


@dataclass
class PluginSpec:
    """Everything needed to (re)load a custom reward in another process: plain, picklable."""

    path: str  # resolved 'file.py:fn' (absolute) or 'package.module:fn'
    style: str = "auto"
    answer_column: str = "answer"
    conversational: bool = False


class PluginReward:
    """A loaded custom reward with its adapter: `score(samples, timeout_s)` -> outcomes.

    Runs in the calling thread. The per-sample deadline is applied to async functions here
    (asyncio.wait_for); synchronous code is bounded by the process that runs it
    (reward.isolation kills it).
    """

    def __init__(self, spec: PluginSpec, fn: Callable | None = None):
        self.spec = spec
        self.fn = fn if fn is not None else load_callable(spec.path)
        self.style = detect_style(self.fn) if spec.style == "auto" else spec.style
        if self.style not in STYLES:
            raise PluginError(f"unknown style {self.style!r}; known: auto, {', '.join(STYLES)}")
        self.name = spec.path.rpartition(":")[2]
        # A callable object counts as async when its class's __call__ is `async def`.
        self.is_async = inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(getattr(type(self.fn), "__call__", None))  # noqa: B004
        self._named, self._var_kw = _params(self.fn)
        self._check_signature()

    @property
    def batched(self) -> bool:
        return self.style in BATCH_STYLES

    # -- start-up checks ------------------------------------------------------------------------

    def _check_signature(self) -> None:
        fn, style = self.fn, self.style
        if style == "sample":
            _check_binds(fn, style, (RewardSample(response=""),), {})
        elif style == "verl":
            _check_binds(fn, style, (), self._verl_kwargs(RewardSample(response="")))
        elif style == "openrlhf":
            _check_binds(fn, style, ([], [], []), {})
        elif style == "trl":
            names = {p.name for p in self._named}
            if "completion_ids" in names and not any(
                p.name == "completion_ids" and p.default is not inspect.Parameter.empty for p in self._named
            ):
                raise PluginError(f"{_describe_fn(fn)} needs completion_ids, which the reward pool does not have (it scores text)")
            if "completions" not in names and not self._var_kw:
                raise PluginError(f"{_describe_fn(fn)} cannot be called in the 'trl' style: it has no 'completions' parameter")

    # -- adapters -------------------------------------------------------------------------------

    def _verl_kwargs(self, s: RewardSample) -> dict[str, Any]:
        kw = {"data_source": s.data_source, "solution_str": s.response, "ground_truth": s.answer, "extra_info": dict(s.extra)}
        names = {p.name for p in self._named}
        # Older veRL scorers are compute_score(solution_str, ground_truth): pass what they take.
        return kw if self._var_kw else {k: v for k, v in kw.items() if k in names}

    def _trl_kwargs(self, samples: list[RewardSample]) -> dict[str, Any]:
        columns: dict[str, list[Any]] = {}
        keys = sorted({k for s in samples for k in s.extra})
        for k in keys:
            columns[k] = [s.extra.get(k) for s in samples]
        if self.spec.answer_column not in columns:
            columns[self.spec.answer_column] = [s.answer for s in samples]
        columns.setdefault("data_source", [s.data_source for s in samples])
        if self.spec.conversational:
            prompts: list[Any] = [[{"role": "user", "content": s.prompt}] for s in samples]
            completions: list[Any] = [[{"role": "assistant", "content": s.response}] for s in samples]
        else:
            prompts, completions = [s.prompt for s in samples], [s.response for s in samples]
        kw = {"prompts": prompts, "completions": completions, **columns}
        names = {p.name for p in self._named}
        if not self._var_kw:
            kw = {k: v for k, v in kw.items() if k in names}
        missing = [p.name for p in self._named if p.default is inspect.Parameter.empty and p.name not in kw]
        if missing:
            raise PluginError(
                f"{_describe_fn(self.fn)} needs column(s) {missing} that the samples do not carry "
                f"(they carry: prompts, completions, {', '.join(sorted(columns))}); put them in each sample's extra"
            )
        return kw

    def _call_one(self, s: RewardSample) -> Any:
        if self.style == "sample":
            return self.fn(s)
        return self.fn(**self._verl_kwargs(s))

    def _call_batch(self, samples: list[RewardSample]) -> Any:
        if self.style == "trl":
            return self.fn(**self._trl_kwargs(samples))
        queries = [s.prompt + s.response for s in samples]
        return self.fn(queries, [s.prompt for s in samples], [s.answer for s in samples])

    def _split_batch_output(self, raw: Any, n: int) -> list[Any]:
        if isinstance(raw, dict):  # OpenRLHF: {"rewards": t, "scores": t, "extra_logs": {...}}
            if "rewards" not in raw:
                raise PluginError(f"{self.name} returned a mapping without 'rewards' (keys {sorted(raw)})")
            raw = raw["rewards"]
        if hasattr(raw, "tolist"):
            raw = raw.tolist()
        if not isinstance(raw, (list, tuple)):
            raise PluginError(f"{self.name} ({self.style} style) returned {type(raw).__name__}, expected one value per sample")
        if len(raw) != n:
            raise PluginError(f"{self.name} ({self.style} style) returned {len(raw)} values for {n} samples")
        return list(raw)

    # -- scoring --------------------------------------------------------------------------------

    def score(self, samples: list[RewardSample], timeout_s: float | None = None) -> list[FunctionOutcome]:
        """One outcome per sample; exceptions become error outcomes (with the message)."""
        where = f"custom reward {self.name!r}"
        if not samples:
            return []
        if self.batched:
            try:
                raw = self._call_batch(samples)
                if inspect.isawaitable(raw):
                    raw = _run_async(raw, None if timeout_s is None else timeout_s * len(samples))
                values = self._split_batch_output(raw, len(samples))
            except asyncio.TimeoutError:
                return [FunctionOutcome.failed("timeout", f"{where} did not finish within {timeout_s:g} s per sample")] * len(samples)
            except Exception as e:
                msg = describe_exception(e) if not isinstance(e, PluginError) else str(e)
                return [FunctionOutcome.failed("error", msg) for _ in samples]
            return [coerce_output(v, where) for v in values]
        if self.is_async:
            return self._score_async_each(samples, timeout_s, where)
        out = []
        for s in samples:
            try:
                raw = self._call_one(s)
                if inspect.isawaitable(raw):
                    raw = _run_async(raw, timeout_s)
                out.append(coerce_output(raw, where))
            except asyncio.TimeoutError:
                out.append(FunctionOutcome.failed("timeout", f"{where} did not finish within {timeout_s:g} s"))
            except Exception as e:
                out.append(FunctionOutcome.failed("error", describe_exception(e)))
        return out

    def _score_async_each(self, samples: list[RewardSample], timeout_s: float | None, where: str) -> list[FunctionOutcome]:
        async def one(s: RewardSample) -> FunctionOutcome:
            try:
                raw = await asyncio.wait_for(self._call_one(s), timeout_s)
                return coerce_output(raw, where)
            except asyncio.TimeoutError:
                return FunctionOutcome.failed("timeout", f"{where} did not finish within {timeout_s:g} s")
            except Exception as e:
                return FunctionOutcome.failed("error", describe_exception(e))

        async def all_() -> list[FunctionOutcome]:
            return list(await asyncio.gather(*(one(s) for s in samples)))

        return asyncio.run(all_())


def _run_async(awaitable: Any, timeout_s: float | None) -> Any:
    async def waited():
        return await asyncio.wait_for(awaitable, timeout_s)

    return asyncio.run(waited())


def load_plugin(
    path: str,
    style: str = "auto",
    answer_column: str = "answer",
    conversational: bool = False,
    base_dir: str | Path | None = None,
) -> PluginReward:
    """Load and check a custom reward now (start-up), so a bad path or signature fails here."""
    return PluginReward(PluginSpec(resolve_spec(path, base_dir), style, answer_column, conversational))
