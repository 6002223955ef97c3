"""Connecting to Ray the same way in every stage.

`RAY_ADDRESS` set (a `ray job submit` run, or a user pointing at a cluster) -> join it.
Otherwise start an embedded local Ray sized by the config, so `qwen25-rl STAGE` works on a
laptop with nothing running.
"""

from __future__ import annotations

import os

from qwen25_rl.config.schema import RayConfig
from qwen25_rl.logs import ENV_SWITCH, QUIET_ENV, quiet_third_party


def init_ray(cfg: RayConfig, *, log_to_driver: bool = True, third_party_logs: bool = False) -> dict:
    """Initialise Ray once per process; returns `ray.cluster_resources()`.

    `third_party_logs` false (`logging.third_party_logs`): vLLM / Ray Train / transformers INFO
    and known-harmless warnings stay out of the console (qwen25_rl.logs), here and in every
    worker of an embedded Ray."""
    import ray

    if third_party_logs:
        os.environ[ENV_SWITCH] = "1"
    quiet_third_party()
    if ray.is_initialized():
        return ray.cluster_resources()
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    # Workers import the project from the driver's environment; the runtime env of a
    # submitted job already carries its working dir, so only env vars are added here.
    env = {"TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
    env |= {ENV_SWITCH: "1"} if third_party_logs else QUIET_ENV
    runtime_env: dict = {"env_vars": env}
    if not third_party_logs:
        runtime_env["worker_process_setup_hook"] = "qwen25_rl.logs.quiet_worker"
    if address:
        # A submitted job already has its runtime env (working dir, env vars); passing another
        # here would replace it, so workers keep the job's.
        ray.init(address=address, namespace=cfg.namespace, log_to_driver=log_to_driver)
    else:
        ray.init(
            # "local": a new embedded instance. Without it ray.init() joins any cluster that
            # `ray start` left running on this machine, which then refuses num_cpus.
            address="local",
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            object_store_memory=cfg.object_store_memory_mb * 2**20 if cfg.object_store_memory_mb else None,
            namespace=cfg.namespace,
            include_dashboard=cfg.include_dashboard,
            log_to_driver=log_to_driver,
            runtime_env=runtime_env,
        )
    return ray.cluster_resources()


def dashboard_url() -> str | None:
    """The address the Ray dashboard really bound (None without one)."""
    try:
        from ray._private.worker import get_dashboard_url  # private: may move

        url = get_dashboard_url()
    except Exception:
        return None
    return f"http://{url}" if url else None
