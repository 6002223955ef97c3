"""Does a stage's worker layout fit the machines its config names?

A stage config may say what hardware it is written for (`ray.hardware`: nodes, GPUs and CPUs
per node). Each stage lists the worker bundles it will reserve (`StageConfig.worker_groups`):
so many workers of so many CPUs and GPUs each. `placement_problems` places those bundles on the
named nodes the way Ray can (a worker sits on one node; a fractional-GPU worker shares one GPU
with others whose fractions add up to at most 1; a whole-GPU worker takes whole GPUs) and says
what does not fit, so a config asking for 16 GPUs on an 8-GPU node fails when it loads instead
of waiting for resources on the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

EPS = 1e-9


@dataclass(frozen=True)
class GroupDemand:
    """`workers` bundles of `cpus` CPUs and `gpus` GPUs each, for the group called `name`."""

    name: str
    workers: int
    cpus: float
    gpus: float = 0.0


def describe(groups: list[GroupDemand]) -> str:
    """'rollout 8 x (2 CPU, 1 GPU), policy 8 x (2 CPU, 0.5 GPU)'."""

    def one(g: GroupDemand) -> str:
        res = f"{g.cpus:g} CPU" + (f", {g.gpus:g} GPU" if g.gpus else "")
        return f"{g.name} {g.workers} x ({res})"

    return ", ".join(one(g) for g in groups if g.workers)


def totals(groups: list[GroupDemand]) -> tuple[float, float]:
    """(CPUs, GPUs) of all the bundles together."""
    return sum(g.workers * g.cpus for g in groups), sum(g.workers * g.gpus for g in groups)


def placement_problems(groups: list[GroupDemand], *, nodes: int, gpus_per_node: int, cpus_per_node: float) -> list[str]:
    """What keeps `groups` from being placed on `nodes` identical nodes; [] when all fit.

    Bundles are placed largest first (GPUs, then CPUs) on the first node and GPU with room:
    first-fit decreasing, which finds a placement whenever the bundles are whole GPUs or
    fractions that pair up (0.5 + 0.5), the layouts configs use.
    """
    problems = []
    for g in groups:
        if g.gpus > 1 and g.gpus != int(g.gpus):
            problems.append(f"{g.name}: {g.gpus:g} GPUs per worker; Ray takes a fraction of one GPU or a whole number of GPUs")
        if g.gpus > gpus_per_node or g.cpus > cpus_per_node:
            problems.append(
                f"{g.name}: one worker asks for {g.cpus:g} CPUs and {g.gpus:g} GPUs; a node has {cpus_per_node:g} CPUs and {gpus_per_node} GPUs"
            )
    if problems:
        return problems
    free_cpus = [float(cpus_per_node)] * nodes
    free_gpus = [[1.0] * gpus_per_node for _ in range(nodes)]
    bundles = sorted(((g.name, g.cpus, g.gpus) for g in groups for _ in range(g.workers)), key=lambda b: (-b[2], -b[1]))
    unplaced: dict[str, int] = {}
    for name, cpus, gpus in bundles:
        if not any(_take(free_cpus, free_gpus, n, cpus, gpus) for n in range(nodes)):
            unplaced[name] = unplaced.get(name, 0) + 1
    if unplaced:
        cpu_total, gpu_total = totals(groups)
        left = ", ".join(f"{k} {v}" for k, v in unplaced.items())
        problems.append(
            f"the workers ask for {gpu_total:g} GPUs and {cpu_total:g} CPUs in all ({describe(groups)}); "
            f"{nodes} node(s) of {gpus_per_node} GPUs and {cpus_per_node:g} CPUs hold {nodes * gpus_per_node} GPUs and "
            f"{nodes * cpus_per_node:g} CPUs; workers left without a place: {left}"
        )
    return problems


def _take(free_cpus: list[float], free_gpus: list[list[float]], node: int, cpus: float, gpus: float) -> bool:
    """Reserve one bundle on `node` if it fits there."""
    if free_cpus[node] + EPS < cpus:
        return False
    devices = free_gpus[node]
    if gpus >= 1:
        whole = [i for i, f in enumerate(devices) if f >= 1 - EPS][: int(gpus)]
        if len(whole) < int(gpus):
            return False
        for i in whole:
            devices[i] = 0.0
    elif gpus > 0:
        # The fullest GPU that still has room: keeps whole GPUs free for whole-GPU workers.
        fits = [i for i, f in enumerate(devices) if f + EPS >= gpus]
        if not fits:
            return False
        i = min(fits, key=lambda k: devices[k])
        devices[i] -= gpus
    free_cpus[node] -= cpus
    return True
