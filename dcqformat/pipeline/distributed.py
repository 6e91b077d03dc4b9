"""Conversion across processes with torch.distributed (``torchrun ... -m dcqformat convert``).

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) ``dcq convert`` joins the process
group (gloo on CPUs, NCCL when the device is CUDA) and every rank: reads its own share of the
source (sample ``i`` goes to rank ``i mod world``; the others are not decoded), trains the
attention model with DistributedDataParallel on its images, computes features, attended
pixels and drop masks of its images; rank 0 clusters, fits the palettes and refines them on
what the ranks gathered to it, then broadcasts them; each rank writes its images into its own
part files of the dataset directory, and rank 0 writes the manifest when all are done. The
same command without torchrun is the single-process path. Results are deterministic for a
given seed and world size.

:class:`Group` is what the stages use: rank, world size, and the few collectives they need.
A single process is a group of one whose collectives return their input.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class Group:
    """The processes of one conversion (a group of one when torch.distributed is not in use)."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (picklable objects between our own processes)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, value: int) -> int:
        return int(sum(self.all_gather(int(value))))

    def min(self, value: int) -> int:
        return int(min(self.all_gather(int(value))))

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def join(device: str = "auto") -> Group:
    """The process group this process was launched into (torchrun's environment), joined once."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Group()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Group(dist.get_rank(), dist.get_world_size())


def leave(barrier: bool = True) -> None:
    """Leave the process group, when this process joined one (after the other ranks are done,
    unless ``barrier`` is False: a rank that failed does not wait for the others)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        try:
            if barrier:
                dist.barrier()  # no rank tears the group down while another still talks to it
        finally:
            dist.destroy_process_group()


def gather_rows(group: Group, positions: np.ndarray, rows: np.ndarray, total: int) -> np.ndarray | None:
    """On rank 0, the (total, ...) array whose row ``positions[k]`` is this rank's ``rows[k]``,
    assembled from every rank; None on the other ranks."""
    parts = group.all_gather((np.asarray(positions), np.asarray(rows)))
    if not group.leader:
        return None
    out = np.zeros((total, *parts[0][1].shape[1:]), parts[0][1].dtype)
    for pos, vals in parts:
        out[pos] = vals
    return out
