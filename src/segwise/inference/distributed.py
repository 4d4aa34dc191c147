"""Prediction over many devices and machines (`segwise predict --devices N --num-nodes M`): one process per device,
started by Lightning's launcher as training starts its DDP processes (the same flags, and for machines the same
MASTER_ADDR, MASTER_PORT, NODE_RANK and WORLD_SIZE variables; gloo on the CPU, NCCL on GPUs). Each process predicts
its share of the inputs; `Shard` is what a process knows of the others."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Process `rank` of `world`, on `device`: `barrier()` waits for every process, `gather(value)` returns every
    process's value (in rank order) to every process."""

    rank: int
    world: int
    device: str
    barrier: Callable[[], None]
    gather: Callable[[Any], list[Any]]

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's items: every world-th one from its rank on (a split every process computes alike)."""
        return list(items[self.rank::self.world])


def accelerator_of(device: str | None) -> str:
    """Lightning's accelerator for a `--device` kind: auto when none is given."""
    return {None: "auto", "cuda": "cuda", "cpu": "cpu", "mps": "mps"}[device]


def launch(work: Callable[[Shard], T], *, devices: int, num_nodes: int, device: str | None) -> T:
    """Start `devices` processes on each of `num_nodes` machines and run `work(shard)` in each; returns this process's
    result. An error in rank 0 ends the processes it started (Lightning ends everything when one of those fails), so
    none waits forever at a barrier."""
    import torch.distributed as dist
    from lightning.fabric import Fabric

    from segwise.progress import quiet_lightning

    with quiet_lightning():
        fabric = Fabric(accelerator=accelerator_of(device), devices=devices, num_nodes=num_nodes, strategy="ddp")

    def run(fabric: Fabric) -> T:
        def gather(value: Any) -> list[Any]:
            values: list[Any] = [None] * fabric.world_size
            dist.all_gather_object(values, value)
            return values

        shard = Shard(fabric.global_rank, fabric.world_size, str(fabric.device), fabric.barrier, gather)
        try:
            return work(shard)
        except BaseException:
            for child in getattr(fabric.strategy.launcher, "procs", []):
                child.send_signal(signal.SIGKILL)
            raise

    with quiet_lightning():
        return fabric.launch(run)
