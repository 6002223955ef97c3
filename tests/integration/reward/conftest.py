"""Local Ray for the reward integration tests: small, loopback only, shut down after each module."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=3,  # logical CPUs: 2 reward workers + a Serve replica on a 2-core machine
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        log_to_driver=False,
        namespace="reward_tests",
    )
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()


@pytest.fixture
def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
