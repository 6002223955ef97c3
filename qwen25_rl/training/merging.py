"""The online merging optimizer applied to a model: `OnlineMerger` wraps an engine's optimizer
step (qwen25_rl.training.engines) with the merge of qwen25_rl.algorithms.merging.

The engine calls `snapshot(module)` just before its optimizer step and `apply(module)` just
after it; `apply` replaces every trained parameter by θ_{t-1} + merge(θ_t - θ_{t-1}, τ). The
task vector τ = θ_SFT - θ_base is keyed by the Hugging Face model's own parameter names
(`named_parameters()`, where a tied lm_head is not listed apart from embed_tokens); the merger
finds those parameters in the module it is given, be it the HF model itself or a wrapper
holding it (ResponseScorer keeps it at `.model`, so its names are `model.<hf name>`).

Random masks come from a generator seeded from (seed, step counter, parameter index), so every
data-parallel rank draws the same masks (the ranks' weights stay identical without any
communication) and a run resumed from a checkpoint (the counter is in `state_dict()`) draws the
masks the uninterrupted run would have drawn.

`read` / `write` say where the weights the optimizer steps live: by default the module's
parameters themselves; under DeepSpeed with a separate fp32 master copy the engine passes
accessors for that copy (qwen25_rl.training.engines).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qwen25_rl.algorithms.merging import check_merge_args, get_merge_method
from qwen25_rl.errors import UserPathError, UserValueError

MERGER_FILE = "merger.json"

Read = Callable[[nn.Parameter], Tensor]
Write = Callable[[nn.Parameter, Tensor], None]

_SETTINGS = ("method", "alpha", "keep", "seed", "rescale")


def _read_param(p: nn.Parameter) -> Tensor:
    return p.detach()


def _write_param(p: nn.Parameter, value: Tensor) -> None:
    p.detach().copy_(value)


class OnlineMerger:
    """Holds τ (name -> tensor, in the HF model's parameter order), the merge settings and the
    number of merged steps. Parameters that do not require grad are left alone."""

    def __init__(
        self,
        tau: Mapping[str, Tensor],
        *,
        method: str,
        alpha: float,
        keep: float,
        seed: int,
        rescale: bool = False,
        step: int = 0,
    ) -> None:
        self.fn = get_merge_method(method)
        check_merge_args(alpha=alpha, keep=keep)
        if not tau:
            raise ValueError("online merging needs a non-empty task vector")
        self.method = method
        self.alpha = float(alpha)
        self.keep = float(keep)
        self.seed = int(seed)
        self.rescale = bool(rescale)
        self.step = int(step)
        self.tau: dict[str, Tensor] = {name: t.detach() for name, t in tau.items()}
        self._before: list[Tensor] | None = None
        self._resolved: tuple[nn.Module, list[tuple[int, str, nn.Parameter]]] | None = None

    # -- the two calls around an optimizer step ---------------------------------------------

    @torch.no_grad()
    def snapshot(self, module: nn.Module, *, read: Read | None = None) -> None:
        """Keep θ_{t-1}: call just before the optimizer step."""
        read = read or _read_param
        self._before = [read(p).detach().clone() for _, _, p in self.parameters(module)]

    @torch.no_grad()
    def apply(self, module: nn.Module, *, read: Read | None = None, write: Write | None = None) -> None:
        """Replace each parameter by θ_{t-1} + merge(θ_t - θ_{t-1}, τ): call just after the
        optimizer step (with the `read` given to `snapshot`). Advances the step counter."""
        if self._before is None:
            raise RuntimeError("OnlineMerger.apply without a snapshot before the optimizer step")
        read, write = read or _read_param, write or _write_param
        before_all, self._before = self._before, None
        for (index, name, p), before in zip(self.parameters(module), before_all):
            after = read(p)
            tau = self.tau[name]
            if tau.device != before.device or tau.dtype != before.dtype:
                tau = self.tau[name] = tau.to(device=before.device, dtype=before.dtype)
            generator = torch.Generator(device=before.device).manual_seed(self.mask_seed(self.step, index))
            update = self.fn(
                after.to(before.dtype) - before, tau, alpha=self.alpha, keep=self.keep, generator=generator, rescale=self.rescale
            )
            write(p, before + update)
        self.step += 1

    def discard(self) -> None:
        """Forget the snapshot of a step the optimizer skipped (nothing is merged)."""
        self._before = None

    def mask_seed(self, step: int, index: int) -> int:
        """Seed of the generator for τ entry `index` (HF parameter order) at merged step `step`."""
        digest = hashlib.blake2b(f"{self.seed}/{step}/{index}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & (2**63 - 1)

    # -- which parameters ---------------------------------------------------------------------

    def parameters(self, module: nn.Module) -> list[tuple[int, str, nn.Parameter]]:
        """(index in τ, HF name, parameter) of `module` for every τ entry that is trained."""
        if self._resolved is not None and self._resolved[0] is module:
            return self._resolved[1]
        named = dict(module.named_parameters())
        prefix = _find_prefix(named, list(self.tau))
        if prefix is None:
            missing = next(k for k in self.tau if k not in named)
            raise ValueError(
                f"the task vector does not fit {type(module).__name__}: no parameter {missing!r} "
                f"(with or without a wrapper prefix); its parameters start {list(named)[:3]}"
            )
        out = []
        for index, (name, t) in enumerate(self.tau.items()):
            p = named[prefix + name]
            if p.shape != t.shape:
                raise ValueError(f"task vector entry {name!r} has shape {tuple(t.shape)}, the parameter {tuple(p.shape)}")
            if p.requires_grad:
                out.append((index, name, p))
        self._resolved = (module, out)
        return out

    # -- checkpoint state --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The settings and the step counter (JSON-able); τ is rebuilt from the model folders."""
        return {
            "method": self.method,
            "alpha": self.alpha,
            "keep": self.keep,
            "seed": self.seed,
            "rescale": self.rescale,
            "step": self.step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the step counter. The saved settings must be the current ones: a resume that
        changes them would no longer continue the same run."""
        changed = [k for k in _SETTINGS if k in state and state[k] != getattr(self, k)]
        if changed:
            diffs = ", ".join(f"{k} {state[k]!r} -> {getattr(self, k)!r}" for k in changed)
            raise UserValueError(f"online merging settings differ from the checkpoint's ({diffs}); resume with the same settings")
        if not isinstance(state.get("step"), int) or state["step"] < 0:
            raise ValueError(f"online merging state has no valid step counter: {state.get('step')!r}")
        self.step = state["step"]
        self._before = None

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MERGER_FILE
        path.write_text(json.dumps(self.state_dict(), indent=2) + "\n")
        return path

    def load(self, folder: Path) -> None:
        path = Path(folder) / MERGER_FILE
        if not path.is_file():
            raise UserPathError(
                f"{path}: the checkpoint has no online merging state (saved without online merging?); "
                f"resume with online merging off, or start a new run"
            )
        self.load_state_dict(json.loads(path.read_text()))


def _find_prefix(named: Mapping[str, Any], keys: list[str]) -> str | None:
    """The prefix under which all `keys` are parameter names of `named` ("" for the HF model
    itself, "model." for a wrapper keeping it at `.model`); None if there is none."""
    if all(k in named for k in keys):
        return ""
    first = keys[0]
    for name in named:
        if name.endswith("." + first):
            prefix = name[: -len(first)]
            if all(prefix + k in named for k in keys):
                return prefix
    return None


def unique_named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """name -> parameter, each tensor once (a tied lm_head shares embed_tokens' entry)."""
    return dict(model.named_parameters())


def task_vector(sft: nn.Module, base: nn.Module, *, base_name: str = "the base model") -> dict[str, Tensor]:
    """τ = θ_sft - θ_base per parameter (fp32, on CPU), keyed by `base`'s names. `sft` may be
    the HF model or a wrapper holding it. UserValueError naming the first parameter whose name
    or shape differs."""
    base_params = unique_named_parameters(base)
    sft_params = unique_named_parameters(sft)
    prefix = _find_prefix(sft_params, list(base_params))
    if prefix is None:
        prefix = next((n[: -len(k)] for k in base_params for n in sft_params if n.endswith("." + k)), "")
    sft_names = {n[len(prefix) :]: p for n, p in sft_params.items() if n.startswith(prefix)}
    for name, p in sft_names.items():
        if name not in base_params:
            raise UserValueError(f"online merging: {base_name} has no parameter {name!r} (the policy has one); the architectures differ")
        if base_params[name].shape != p.shape:
            raise UserValueError(
                f"online merging: parameter {name!r} is {tuple(base_params[name].shape)} in {base_name} "
                f"but {tuple(p.shape)} in the policy; the architectures differ"
            )
    for name in base_params:
        if name not in sft_names:
            raise UserValueError(f"online merging: {base_name} has a parameter {name!r} the policy lacks; the architectures differ")
    with torch.no_grad():
        return {name: sft_names[name].detach().float().cpu() - b.detach().float().cpu() for name, b in base_params.items()}


def build_merger(
    model: nn.Module,
    *,
    method: str,
    base_model: str | Path,
    alpha: float,
    keep: float,
    seed: int,
    rescale: bool = False,
    sft_model: str | Path | None = None,
) -> OnlineMerger:
    """An `OnlineMerger` whose τ is the policy's starting weights minus the base model in the
    folder `base_model`. `model` is the HF policy model (or a wrapper holding it) as it starts
    training: its weights are θ_SFT. When it does not start from θ_SFT (a resumed run loads
    trained weights) pass the SFT folder as `sft_model`; `model` is then only checked for fit.

    Errors the user must fix (UserValueError): an unknown method, alpha or keep out of range,
    a base folder that does not exist or holds no model, a base model whose parameter names or
    shapes differ from the policy's."""
    get_merge_method(method)  # an unknown name is a UserError listing the known ones
    try:
        check_merge_args(alpha=alpha, keep=keep)
    except ValueError as e:
        raise UserValueError(str(e)) from None
    base = _load_folder(base_model, "base model")
    base_name = f"the base model {base_model}"
    if sft_model is None:
        tau = task_vector(model, base, base_name=base_name)
    else:
        sft = _load_folder(sft_model, "SFT model")
        tau = task_vector(sft, base, base_name=base_name)
        task_vector(model, base, base_name=base_name)  # the policy must fit too
        del sft
    del base
    return OnlineMerger(tau, method=method, alpha=alpha, keep=keep, seed=seed, rescale=rescale)


def _load_folder(path: str | Path, what: str) -> nn.Module:
    from qwen25_rl.models import load_model

    folder = Path(path)
    if not folder.is_dir():
        raise UserValueError(f"online merging: the {what} folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise UserValueError(f"online merging: the {what} folder {folder} holds no Hugging Face model (no config.json)")
    return load_model(folder, dtype="float32")
