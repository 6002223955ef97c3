"""A readable console: third-party INFO logs and known-harmless warnings quiet by default.

Every stage's console shows one line per step of its own. vLLM (INFO on every weight reload and
prefix-cache reset), Ray Train (resource requests, worker-group start, checkpoint paths) and
transformers (a progress bar per load and save) would bury those lines; so would warnings that
are known to be harmless here. `logging.third_party_logs: true` shows all of it again.

Applied in the driver (`quiet_third_party`) and, through Ray's `worker_process_setup_hook`, in
every worker process of an embedded Ray (`quiet_worker`); our own workers also call it when
they start, so a job on a cluster whose runtime env we do not set gets the same quiet workers.
"""

from __future__ import annotations

import logging
import os

# Environment read when the libraries first import (setdefault: a user's own choice wins).
QUIET_ENV = {
    "VLLM_LOGGING_LEVEL": "WARNING",
    # transformers' "Loading weights" / "Writing model shards" bars follow huggingface_hub's switch.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}

# Loggers whose INFO is the library's running commentary, not the user's business.
QUIET_LOGGERS = ("vllm", "ray.train", "ray.tune", "deepspeed", "DeepSpeed", "transformers", "torch.distributed")

# (logger, message start) of warnings known to be harmless in this platform, with why:
KNOWN_HARMLESS = (
    # vLLM's layer-wise reload: the rotary embedding has no weights to load (its cache is computed).
    ("vllm", "RotaryEmbedding: Failed to load weights"),
    # vLLM's CPU worker turns torch.set_num_threads into a no-op once it bound its threads (and
    # says so at every call); the rollout worker sets the thread count before the engine starts.
    ("vllm", "CPU backend doesn't allow to use `torch.set_num_threads`"),
    # Ray Train's placement-group cleaner polls the State API, absent without the dashboard.
    ("ray.train", "Failed to query Ray Train Controller actor state"),
    # DeepSpeed on a CPU-only machine: we set DS_ACCELERATOR=cpu on purpose.
    ("DeepSpeed", "Setting accelerator to CPU"),
    # ray.init's own INFO line (the stages print the dashboard address themselves) and its note
    # that `ray start` turned token authentication on (README: Monitoring says how to log in).
    ("ray._private.worker", "Started a local Ray instance"),
    ("ray._private.worker", "Connecting to existing Ray cluster"),
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled"),
)

ENV_SWITCH = "QWEN25_RL_THIRD_PARTY_LOGS"  # "1": show everything (set from logging.third_party_logs)


class _DropKnownHarmless(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not any(s in msg for s in self.starts)


def quiet_third_party() -> None:
    """Quiet third-party INFO logs and known-harmless warnings in this process (idempotent)."""
    if os.environ.get(ENV_SWITCH) == "1":
        return
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    by_logger: dict[str, list[str]] = {}
    for name, start in KNOWN_HARMLESS:
        by_logger.setdefault(name, []).append(start)
    for name, starts in by_logger.items():
        drop = _DropKnownHarmless(tuple(starts))
        # A record is handled by the handlers of its logger and of every ancestor it propagates
        # to (vLLM's own handler sits on "vllm", Ray's on "ray"): filter all of those, and the
        # loggers already created below `name` that carry handlers of their own.
        loggers = [logging.getLogger(name)]
        parent = name.rpartition(".")[0]
        while parent:
            loggers.append(logging.getLogger(parent))
            parent = parent.rpartition(".")[0]
        loggers.append(logging.getLogger())
        loggers += [
            c for n, c in list(logging.root.manager.loggerDict.items()) if n.startswith(name + ".") and isinstance(c, logging.Logger)
        ]
        for logger in loggers:
            for target in [logger, *logger.handlers]:
                if not any(isinstance(f, _DropKnownHarmless) and f.starts == drop.starts for f in target.filters):
                    target.addFilter(drop)


def follow_vllm_logging() -> None:
    """vLLM configures its logging again when an engine starts (`configure_logging`: new handlers,
    without our filter), and its engine start logs known-harmless warnings right after: filter
    again after every such configuration. Call after `import vllm` (idempotent)."""
    try:
        import vllm.logger as vllm_logger
    except ImportError:
        return
    original = getattr(vllm_logger, "_configure_vllm_root_logger", None)
    if original is None or getattr(original, "_qwen25_rl_quiet", False):
        return

    def configure(*args, **kwargs):
        original(*args, **kwargs)
        quiet_third_party()

    configure._qwen25_rl_quiet = True  # type: ignore[attr-defined]
    vllm_logger._configure_vllm_root_logger = configure


def quiet_worker() -> None:
    """Ray `worker_process_setup_hook`: the same quiet console in every worker process."""
    quiet_third_party()
