"""pass@k: the chance that at least one of k samples solves a problem, estimated from n samples.

Pure arithmetic (no tensors needed, no Ray, no I/O): GRPO's held-out evaluation and
`qwen25-rl eval` both call it once per problem and average over problems.
"""

from __future__ import annotations


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from `n` samples of which `c` are correct (Chen et al.
    2021, "Evaluating Large Language Models Trained on Code", eq. 1):

        pass@k = 1 - C(n - c, k) / C(n, k)

    i.e. one minus the chance that k samples drawn without replacement from the n are all
    wrong. Computed in the product form

        C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i)

    which never forms a binomial coefficient: C(200, 100) ~ 9e58 would lose every digit of
    the ratio in floating point (and overflow float64 near n = 1030), while each factor here
    lies in [0, 1]. When n - c < k every k-subset holds a correct sample: exactly 1.0.

    Raises ValueError unless 0 <= c <= n and 1 <= k <= n: with fewer than k samples there is
    no unbiased estimate (the callers decide what to report instead).
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"pass_at_k: {name} must be an integer, got {v!r}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c (correct samples) must lie in 0..n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must lie in 1..n (the samples drawn), got k={k}, n={n}")
    if n - c < k:
        return 1.0
    all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        all_wrong *= 1.0 - k / i
    return 1.0 - all_wrong
