"""Online merging optimizers: OnDARE and OnTIES (Lu et al. 2024, "Online Merging Optimizers for
Boosting Rewards and Mitigating Tax in Alignment", arXiv:2405.17931; the optimizer Qwen2 and
Qwen2.5 used for DPO).

Every optimizer step merges the step itself with the SFT task vector. With Δ the update AdamW
would apply this step (the weights after the ordinary step minus the weights before it,
decoupled weight decay included) and τ = θ_SFT - θ_base (the policy's starting weights minus the
pretrained base model), the merged step is

    θ_t = θ_{t-1} + (1 - α) F(Δ) + α F(τ)

where F sparsifies a tensor (one parameter tensor at a time):

  OnDARE (registered "ondare"): a random drop. Each entry is kept independently with
    probability `keep` (masks drawn afresh every step, one for Δ and, when α > 0, one for τ);
    the paper's formula keeps the surviving entries as they are. `rescale=True` divides them
    by `keep`, so that E[F(x)] = x.
  OnTIES (registered "onties"): TIES' trim and elect, deterministic. Trim: keep the
    round(keep * numel) entries (at least one) of largest magnitude of each term. Elect: with
    a = (1 - α) trim(Δ) and b = α trim(τ), the elected sign is s = sign(a + b) (the sign of
    the weighted sum); the result keeps the entries of a and b
    whose sign is s and adds them: a·[sign a = s] + b·[sign b = s]. Where the two disagree
    the larger weighted entry wins; where a + b = 0 exactly nothing is kept. `rescale=True`
    multiplies each trimmed term by ||x||_1 / ||trim(x)||_1, as the public code does.

Where the public code (github.com/QwenLM/online_merging_optimizers) differs, and what this
module does instead:
  - It sparsifies τ once, when the optimizer is built, and adds that same F(τ) every step.
    Here OnDARE draws a fresh mask for τ every step (the formula above applied as written);
    OnTIES' trim is deterministic, so there the two agree.
  - Its OnDARE drops with `torch.nn.functional.dropout`, which always divides the kept
    entries by `keep`; it always clamps its dropped τ to [-1, 1] (`clip_val`), and its own
    `rescale` flag additionally restores the L1 norm of the dropped Δ and clamps that too.
    Here `rescale=True` is the division by `keep` alone, and nothing is clamped. To reproduce its released DPO script (rescale off in the
    script, so only dropout's 1/keep) use `rescale=True` here.
  - Its OnTIES elects the sign from the unweighted sum τ + Δ and counts a zero sum as +;
    here the sign is elected from the weighted sum (1 - α) trim(Δ) + α trim(τ), and a zero
    sum keeps nothing. With α small and one step's Δ far smaller than τ, its rule follows
    sign(τ) wherever τ survived the trim, so it drops every Adam update pointing against the
    SFT direction; the weighted rule drops the τ entry instead unless α|τ| outweighs it.
  - Its trim keeps int(keep * numel) entries and skips the trim when that is 0; here
    round(keep * numel), at least one.
  - It applies the decoupled weight decay after merging, outside F; here Δ is the whole
    AdamW step, decay included, so the decay is sparsified with the rest.
  - Its "online_step" k (merge the sum of k steps every k-th step) is not implemented: here
    every step is merged (k = 1, its default).

Defaults: the functions take α and `keep` explicitly. The released script (Qwen 7B DPO, lr
1e-6) uses OnDARE with keep 0.01 and α 1e-7 (`DEFAULT_KEEP`, `DEFAULT_ALPHA`); the paper's
text was not checked for other values. Note that with the paper formula (`rescale=False`) a
random keep of 1% also shrinks the expected step to 1% of Adam's; the script's behaviour
corresponds to `rescale=True`.

These are pure functions of tensors: no Ray, no I/O, no config objects. The caller
(qwen25_rl.training.merging) owns the task vector, the generators and the step counter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from qwen25_rl.algorithms.registry import Registry

# (delta, tau, *, alpha, keep, generator, rescale) -> the merged update to add to θ_{t-1}
MergeMethod = Callable[..., Tensor]

MERGE_METHODS: Registry[MergeMethod] = Registry("online merging method")
register_merge_method = MERGE_METHODS.register

# The released DPO script's values (QwenLM/online_merging_optimizers, run_dpo_om.sh).
DEFAULT_ALPHA = 1e-7
DEFAULT_KEEP = 0.01


def get_merge_method(name: str) -> MergeMethod:
    """The registered merge method called `name`; an error listing the known names otherwise."""
    return MERGE_METHODS.get(name)


def check_merge_args(*, alpha: float, keep: float) -> None:
    """ValueError unless 0 <= alpha <= 1 and 0 < keep <= 1 (NaN fails both)."""
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"online merging alpha must be in [0, 1], got {alpha!r}")
    if not (isinstance(keep, (int, float)) and 0.0 < keep <= 1.0):
        raise ValueError(f"online merging keep (the fraction of entries kept) must be in (0, 1], got {keep!r}")


def _check_pair(delta: Tensor, tau: Tensor) -> Tensor:
    if delta.shape != tau.shape:
        raise ValueError(f"delta and tau differ in shape: {tuple(delta.shape)} vs {tuple(tau.shape)}")
    return tau.to(device=delta.device, dtype=delta.dtype)


def random_keep_mask(x: Tensor, keep: float, generator: torch.Generator | None) -> Tensor | None:
    """Bernoulli(keep) mask shaped like `x` (None when keep is 1: nothing is dropped).

    Drawn as `torch.rand(x.shape, generator=generator, device=<generator's device>) < keep`
    (float32), then moved to x's device: the same generator state gives the same mask
    whatever x's dtype."""
    if keep >= 1.0:
        return None
    device = generator.device if generator is not None else x.device
    return (torch.rand(x.shape, generator=generator, device=device, dtype=torch.float32) < keep).to(x.device)


def top_magnitude_mask(x: Tensor, keep: float) -> Tensor | None:
    """Mask of the round(keep * numel) (at least 1) entries of largest |x| (None when all are
    kept). Ties at the boundary are broken by torch.topk, deterministically for a given input."""
    n = x.numel()
    k = max(1, min(n, round(keep * n)))
    if k >= n:
        return None
    idx = torch.topk(x.detach().abs().flatten(), k, sorted=False).indices
    mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    mask[idx] = True
    return mask.view_as(x)


@register_merge_method("ondare")
def ondare_merge(
    delta: Tensor, tau: Tensor, *, alpha: float, keep: float, generator: torch.Generator | None, rescale: bool = False
) -> Tensor:
    """(1 - α) DARE(Δ) + α DARE(τ), each entry kept with probability `keep` (divided by
    `keep` when `rescale`). Δ's mask is drawn first, then τ's (only when α > 0), from
    `generator` (the global generator when None)."""
    check_merge_args(alpha=alpha, keep=keep)
    tau = _check_pair(delta, tau)
    scale = 1.0 / keep if rescale else 1.0
    out = _dare(delta, keep, generator, (1.0 - alpha) * scale)
    if alpha > 0:
        out = out + _dare(tau, keep, generator, alpha * scale)
    return out


def _dare(x: Tensor, keep: float, generator: torch.Generator | None, weight: float) -> Tensor:
    mask = random_keep_mask(x, keep, generator)
    return x * weight if mask is None else torch.where(mask, x * weight, torch.zeros((), dtype=x.dtype, device=x.device))


@register_merge_method("onties")
def onties_merge(
    delta: Tensor, tau: Tensor, *, alpha: float, keep: float, generator: torch.Generator | None = None, rescale: bool = False
) -> Tensor:
    """TIES of a = (1 - α) trim(Δ) and b = α trim(τ): elected sign s = sign(a + b), result
    a·[sign a = s] + b·[sign b = s]. Deterministic; `generator` is accepted for a common
    signature and unused."""
    del generator
    check_merge_args(alpha=alpha, keep=keep)
    tau = _check_pair(delta, tau)
    a = _trim(delta, keep, rescale) * (1.0 - alpha)
    if alpha == 0:
        return a
    b = _trim(tau, keep, rescale) * alpha
    elected = torch.sign(a + b)
    return torch.where(torch.sign(a) == elected, a, 0.0) + torch.where(torch.sign(b) == elected, b, 0.0)


def _trim(x: Tensor, keep: float, rescale: bool) -> Tensor:
    mask = top_magnitude_mask(x, keep)
    if mask is None:
        return x
    trimmed = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if rescale:
        kept = trimmed.abs().sum()
        if kept > 0:
            trimmed = trimmed * (x.abs().sum() / kept)
    return trimmed


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_KEEP",
    "MERGE_METHODS",
    "MergeMethod",
    "check_merge_args",
    "get_merge_method",
    "ondare_merge",
    "onties_merge",
    "random_keep_mask",
    "register_merge_method",
    "top_magnitude_mask",
]
