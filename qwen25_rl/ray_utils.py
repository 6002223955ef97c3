"""Connecting to Ray the same way in every stage.

`RAY_ADDRESS` set (a `ray job submit` run, or a user pointing at a cluster) -> join it.
Otherwise start an embedded local Ray sized by the config, so `qwen25-rl STAGE` works on a
laptop with nothing running.
"""

from __future__ import annotations

import os

from qwen25_rl.config.schema import RayConfig


def init_ray(cfg: RayConfig, *, log_to_driver: bool = True) -> dict:
    """Initialise Ray once per process; returns `ray.cluster_resources()`."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    # Workers import the project from the driver's environment; the runtime env of a
    # submitted job already carries its working dir, so only env vars are added here.
    runtime_env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}}
    if address:
        # A submitted job already has its runtime env (working dir, env vars); passing another
        # here would replace it, so workers keep the job's.
        ray.init(address=address, namespace=cfg.namespace, log_to_driver=log_to_driver)
    else:
        ray.init(
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            object_store_memory=cfg.object_store_memory_mb * 2**20 if cfg.object_store_memory_mb else None,
            namespace=cfg.namespace,
            include_dashboard=cfg.include_dashboard,
            log_to_driver=log_to_driver,
            runtime_env=runtime_env,
        )
    return ray.cluster_resources()
