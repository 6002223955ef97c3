"""How tests bound time without flaking on a loaded machine.

Two kinds of claims are timed in this suite:

- "returns by its deadline, without waiting for the work": the work it must not wait for is
  made much longer than the deadline, and the bound is the deadline plus `SLACK_S`, the delay
  a busy 2-core machine can add (a test machine runs other jobs: measured stalls of 1-2 s);
- "runs concurrently": shown by the work's own timestamps overlapping (`max_overlap`), never by
  a total wall time, which load stretches.
"""

from __future__ import annotations

import os

SLACK_S = float(os.environ.get("QWEN25_RL_TEST_SLACK_S", "5"))


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    open_, best = 0, 0
    for _, delta in events:
        open_ += delta
        best = max(best, open_)
    return best


# float32 on CPU: vLLM's kernels vs torch's log-probability of a sampled token, right after a
# weight sync (the GRPO tests' bound on |sampler - trainer|).
SYNC_LOGPROB_TOL = 1e-3
