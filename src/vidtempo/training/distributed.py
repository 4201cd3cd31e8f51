"""Multi-process training with torch.distributed, started the standard way:

    torchrun --nproc_per_node=K -m vidtempo train --features-dir F --output-dir O ...

Each process trains the same model on its share of every class-balanced batch (gloo on the CPU, nccl on
GPUs, one GPU per process); DistributedDataParallel averages the gradients. Every process validates on the
whole validation split, but floating-point sums can differ in the last bit between processes, so rank 0
takes the decisions (best epoch, early stop) and broadcasts them: a process that stopped alone would leave
the others waiting in a collective forever. Only rank 0 writes checkpoints (plain state-dict keys, the
same format), results and reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_decisions(self, *decisions: bool) -> tuple[bool, ...]:
        """Rank 0's ``decisions``, in every process."""
        if not self.enabled:
            return tuple(bool(d) for d in decisions)
        device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        flags = torch.tensor([int(bool(d)) for d in decisions], dtype=torch.int32, device=device)
        dist.broadcast(flags, src=0)
        return tuple(bool(f) for f in flags.tolist())


def init_distributed(device: str | None) -> Distributed:
    """Join the process group that torchrun describes in the environment (a no-op without torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and str(device or "auto") != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return Distributed(rank, world_size, local_rank)
