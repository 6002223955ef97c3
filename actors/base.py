"""What every Ray worker of a `WorkerGroup` shares: thread setup and torch.distributed init."""

from __future__ import annotations

import os
import socket
from datetime import timedelta


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class DistributedWorker:
    """Base class of policy / reference / rollout workers.

    Ray sets an actor's OMP_NUM_THREADS to its CPU request (at least 1); torch's intra-op
    threads are set here explicitly so that fractional-CPU actors sharing cores do not each
    spin up a thread per core.
    """

    def __init__(self, *, torch_threads: int | None = None):
        import torch

        n = torch_threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 1
        torch.set_num_threads(n)
        self.rank = 0
        self.world_size = 1

    def ping(self) -> bool:
        return True

    def node_address(self) -> tuple[str, int]:
        """(IP of this node, a free TCP port on it): rank 0's answer becomes the rendezvous."""
        import ray

        ip = ray.util.get_node_ip_address()
        return ip, free_port("0.0.0.0")

    def init_distributed(
        self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str, timeout_s: float = 600
    ) -> None:
        """Join the group's default process group (gloo on CPU, NCCL on GPU).

        The env vars are set as well because DeepSpeed reads RANK / WORLD_SIZE / LOCAL_RANK.
        """
        import torch.distributed as dist

        os.environ.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port),
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"),
        )
        if not dist.is_initialized():
            dist.init_process_group(
                backend=backend,
                init_method=f"tcp://{master_addr}:{master_port}",
                rank=rank,
                world_size=world_size,
                timeout=timedelta(seconds=timeout_s),
            )
        self.rank, self.world_size = rank, world_size

    def shutdown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
