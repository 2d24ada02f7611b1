"""Several processes (``torchrun``) made simple: a no-op in a single process.

Under ``torchrun`` (``WORLD_SIZE`` > 1) :meth:`Dist.setup` initialises the process group (gloo on CPU, NCCL on
CUDA, one GPU per local rank) unless the caller already did; the helpers all-reduce arrays and gather or broadcast
picklable objects. Used by the ERF and the shape-bias runs.
"""
from __future__ import annotations

import os

import numpy as np
import torch


class Dist:
    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.created = False
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
            self.rank = int(os.environ.get("RANK", "0") or 0)
        self.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    def setup(self, device: torch.device) -> None:
        if not self.active:
            return
        if not self.dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            self.dist.init_process_group(backend=backend)
            self.created = True
            self.rank, self.world = self.dist.get_rank(), self.dist.get_world_size()
        self.device = device if self.dist.get_backend() == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        if self.active:
            self.dist.barrier()

    def sum_array(self, a: np.ndarray) -> np.ndarray:
        if not self.active:
            return a
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        self.dist.all_reduce(t)
        return t.cpu().numpy()

    def gather(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        if not self.active:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.created:
            self.dist.destroy_process_group()
