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
        _register_stack_dump()

    def pid(self) -> int:
        return os.getpid()

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


def _register_stack_dump() -> None:
    """SIGUSR1 -> every thread's Python stack appended to STACK_DIR/<pid>.txt: what the driver
    reads when a call hangs and py-spy is not installed (qwen25_rl.actors.deadlines)."""
    import faulthandler
    import signal

    from qwen25_rl.actors.deadlines import STACK_DIR

    try:
        STACK_DIR.mkdir(parents=True, exist_ok=True)
        f = open(STACK_DIR / f"{os.getpid()}.txt", "a")  # noqa: SIM115 - kept open for the process's life
        faulthandler.register(signal.SIGUSR1, file=f, all_threads=True)
    except (OSError, ValueError, RuntimeError):  # not the main thread, or no writable temp dir
        pass


# -- fault injection (chaos tests) -------------------------------------------------------------

FAULT_ENV = "QWEN25_RL_FAULT_INJECT"


def inject_fault(worker: str, method: str) -> None:
    """A deterministic test seam: `QWEN25_RL_FAULT_INJECT` =
    `<worker>:<method>:<kill|hang>:<call>[:<times>]:<state dir>` makes the `call`-th call (1-based,
    counted over every process of that worker kind in the run, in `state dir`) of `method` on a
    `worker` ("rollout", "policy", ...) SIGKILL its own process or sleep forever; `times` (default
    1) calls from there on do so. Unset (always, outside tests): nothing happens."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if len(parts) == 5:
        w, m, action, at, state = parts
        times = "1"
    else:
        w, m, action, at, times, state = parts
    if (w, m) != (worker, method) or (worker == "policy" and int(os.environ.get("RANK", "0")) != 0):
        return
    from pathlib import Path

    d = Path(state)
    d.mkdir(parents=True, exist_ok=True)
    n = len(list(d.glob("call-*"))) + 1
    (d / f"call-{n}-pid{os.getpid()}").touch()
    if not int(at) <= n < int(at) + int(times):
        return
    (d / f"fired-{n}-{action}-pid{os.getpid()}").touch()
    if action == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        import time

        while True:
            time.sleep(3600)
