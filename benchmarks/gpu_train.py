"""Training speed and memory of the full model on a GPU: samples/s, epoch time, peak memory.

The full documented model (65.3 M parameters) at batch 48 on 73-step sequences (64 frames, multi-scale),
the seed's epoch of 2,622 training videos, in float32 and bf16 autocast, with and without torch.compile.
The seed's hardware was a 9.8 GB MIG slice: the table says whether each configuration fits. Run on a
machine with a CUDA GPU:

    python benchmarks/gpu_train.py [--steps 30] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from vidtempo import FocalLoss, SuperEnhancedTemporalModel

SEED_TRAIN_VIDEOS = 2622
MIG_SLICE_GB = 9.8


def run(precision: str, compiled: bool, steps: int, batch: int, frames: int, vary_lengths: bool) -> dict:
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = SuperEnhancedTemporalModel().to(device)
    train_model = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    criterion = FocalLoss(torch.ones(4, device=device)).to(device)
    x = torch.randn(batch, frames, 1280, device=device)
    y = torch.randint(0, 4, (batch,), device=device)
    lengths = torch.randint(40, frames + 1, (batch,)) if vary_lengths else torch.full((batch,), frames)
    lengths[0] = frames
    dtype = torch.bfloat16 if precision == "bf16" else None
    torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = criterion(train_model(x, lengths), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(5):  # warm-up (and compilation)
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {"samples_s": batch / seconds, "epoch_s": SEED_TRAIN_VIDEOS / (batch / seconds),
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--frames", type=int, default=73)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_train.py: no CUDA GPU here; run it on a machine with one")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.frames} steps (lengths 40..{args.frames}), epoch = {SEED_TRAIN_VIDEOS} videos")
    print(f"{'precision':<10}{'compile':<9}{'samples/s':>11}{'epoch s':>9}{'peak GB':>9}  fits {MIG_SLICE_GB} GB")
    for precision in ("fp32", "bf16"):
        for compiled in (False, True) if args.compile else (False,):
            r = run(precision, compiled, args.steps, args.batch_size, args.frames, vary_lengths=True)
            print(f"{precision:<10}{str(compiled):<9}{r['samples_s']:>11.1f}{r['epoch_s']:>9.1f}{r['peak_gb']:>9.2f}"
                  f"  {'yes' if r['peak_gb'] < MIG_SLICE_GB else 'no'}")


if __name__ == "__main__":
    main()
