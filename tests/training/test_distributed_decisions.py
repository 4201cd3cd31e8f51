"""In a distributed run rank 0 takes the decisions (best epoch, early stop) and every process follows."""

from __future__ import annotations

import os
import socket

import pytest
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _decide(rank: int, port: int, results) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from vidtempo.training.distributed import init_distributed

    group = init_distributed("cpu")
    # Each process measured something slightly different; rank 0's view must win everywhere.
    results[rank] = group.broadcast_decisions(rank == 0, rank == 1)
    import torch.distributed as dist

    dist.destroy_process_group()


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_every_process_follows_rank_zero():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_decide, args=(_free_port(), results), nprocs=2, join=True)
        assert dict(results) == {0: (True, False), 1: (True, False)}
