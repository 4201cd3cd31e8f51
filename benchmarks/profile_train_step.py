"""Where a training step's time goes: torch.profiler over a few steps of the model at batch 48 (CPU).

A step is what vidtempo's trainer does per batch: forward (autocast for bf16), FocalLoss, zero_grad,
backward, clip_grad_norm_(1.0), AdamW step. Inputs are random features with lengths uniform in 40..73,
zero-padded to the batch's longest (a fresh batch each step). Prints the phases (forward / backward /
clip / optimizer, via record_function) and the top ops by self CPU time.

    python benchmarks/profile_train_step.py [--model full|small] [--precision fp32|bf16] [--steps 3]
        [--warmup 1] [--batch-size 48] [--seed-model] [--threads N] [--top 25] [--trace out.json]

``--seed-model`` profiles the seed reference's unmasked model (seed_reference.SeedTemporalModel) instead.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_reference import SeedTemporalModel  # noqa: E402

from vidtempo.model.loss import FocalLoss  # noqa: E402
from vidtempo.model.temporal import SuperEnhancedTemporalModel  # noqa: E402

SMALL_MODEL = {"hidden_dim": 128, "num_lstm_layers": 2, "num_attention_heads": 4}


def make_batch(gen: torch.Generator, batch: int, dim: int, lo: int = 40, hi: int = 73):
    lengths = torch.randint(lo, hi + 1, (batch,), generator=gen)
    x = torch.zeros(batch, int(lengths.max()), dim)
    for i, n in enumerate(lengths.tolist()):
        x[i, :n] = torch.randn(n, dim, generator=gen)
    return x, torch.randint(0, 4, (batch,), generator=gen), lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("full", "small"), default="full")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--seed-model", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--trace", default=None, help="also write a Chrome trace here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = {"feature_dim": 1280, **(SMALL_MODEL if args.model == "small" else {})}
    model = (SeedTemporalModel if args.seed_model else SuperEnhancedTemporalModel)(**config).train()
    criterion = FocalLoss(torch.ones(4), gamma=2.0, smoothing=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
    gen = torch.Generator().manual_seed(0)

    def step(x, y, lengths):
        with record_function("## forward"):
            with amp:
                logits = model(x, lengths)
            loss = criterion(logits, y)
        with record_function("## backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("## clip_grad_norm"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        with record_function("## optimizer"):
            optimizer.step()

    for _ in range(args.warmup):
        step(*make_batch(gen, args.batch_size, config["feature_dim"]))
    batches = [make_batch(gen, args.batch_size, config["feature_dim"]) for _ in range(args.steps)]
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for b in batches:
            step(*b)
    wall = time.perf_counter() - start
    frames = sum(int(b[2].sum()) for b in batches)
    print(f"{'seed' if args.seed_model else 'vidtempo'} model ({args.model}), {args.precision}, batch "
          f"{args.batch_size}, {args.steps} profiled steps, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads: {wall:.2f}s wall (profiler on), {wall / args.steps:.2f} s/step, "
          f"{args.steps * args.batch_size / wall:.2f} samples/s, {frames / args.steps / args.batch_size:.1f} frames/video")

    events = prof.key_averages()
    phases = [e for e in events if e.key.startswith("## ")]
    total = sum(e.cpu_time_total for e in phases) or 1.0
    print("\nphases (CPU time incl. children):")
    for e in sorted(phases, key=lambda e: -e.cpu_time_total):
        print(f"  {e.key[3:]:<16} {e.cpu_time_total / 1e6:8.2f} s  {100 * e.cpu_time_total / total:5.1f} %")
    print(f"\ntop {args.top} ops by self CPU time:")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=48))
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"chrome trace: {args.trace}")


if __name__ == "__main__":
    main()
