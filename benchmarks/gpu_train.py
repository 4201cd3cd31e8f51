"""Training speed and memory of the full model on a GPU: samples/s, epoch time, peak memory, per precision.

The full documented model (65.3 M parameters) at batch 48 on 73-step sequences (64 frames, multi-scale;
lengths drawn from 40..73), the seed's epoch of 2,622 training videos, in each precision the GPU can run
(fp32 with TF32 off, tf32, bf16 and fp16 autocast, fp16 with a gradient scaler), each with and without
torch.compile. A step is the trainer's: PrecisionPlan autocast, FocalLoss, backward, clip, AdamW. The seed
trained on a 9.8 GB A100 MIG slice: the table says whether each configuration's peak memory fits it.

    python benchmarks/gpu_train.py [--steps 30] [--compile]
    python benchmarks/gpu_train.py --device cpu --quick     # a small model, to check the script runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import vidtempo  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from vidtempo import FocalLoss, SuperEnhancedTemporalModel
from vidtempo.errors import ConfigError
from vidtempo.runtime import PrecisionPlan

SEED_TRAIN_VIDEOS = 2622
MIG_SLICE_GB = 9.8
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
QUICK_MODEL = {"feature_dim": 1280, "hidden_dim": 64, "num_lstm_layers": 1, "num_attention_heads": 4}


def train_step(model, train_model, plan: PrecisionPlan, criterion, optimizer, x, y, lengths) -> None:
    with plan.autocast():
        logits = train_model(x, lengths)
    loss = criterion(logits, y)
    optimizer.zero_grad(set_to_none=True)
    plan.backward(loss)
    plan.step(optimizer, model.parameters(), 1.0)


def measure(plan: PrecisionPlan, compiled: bool, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = SuperEnhancedTemporalModel(**(QUICK_MODEL if args.quick else {})).to(device)
    train_model = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    criterion = FocalLoss(torch.ones(4, device=device)).to(device)
    x = torch.randn(args.batch_size, args.frames, 1280, device=device)
    y = torch.randint(0, 4, (args.batch_size,), device=device)
    lengths = torch.randint(min(40, args.frames), args.frames + 1, (args.batch_size,))
    lengths[0] = args.frames
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):  # kernel choice, the scaler's first scales, and compilation
        train_step(model, train_model, plan, criterion, optimizer, x, y, lengths)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, train_model, plan, criterion, optimizer, x, y, lengths)
    _synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return {"samples_s": args.batch_size / seconds, "epoch_s": SEED_TRAIN_VIDEOS * seconds / args.batch_size,
            "peak_gb": peak}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plans(device: torch.device) -> list[tuple[str, PrecisionPlan | str]]:
    """Each precision with its plan, or the one line saying why this device cannot run it."""
    out = []
    for name in PRECISIONS:
        try:
            out.append((name, PrecisionPlan.for_device(name, device)))
        except ConfigError as exc:
            out.append((name, str(exc)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--frames", type=int, default=73)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--quick", action="store_true", help="a small model and a few short steps")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.batch_size, args.frames = 2, 1, 4, 12
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_train.py: no CUDA GPU here; run it on a machine with one (or --device cpu --quick)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    capability = ".".join(map(str, torch.cuda.get_device_capability(device))) if device.type == "cuda" else "-"
    print(f"{name} (compute capability {capability}), torch {torch.__version__}, "
          f"{'small model' if args.quick else 'full model'}, batch {args.batch_size}, {args.frames} steps "
          f"(lengths {min(40, args.frames)}..{args.frames}), epoch = {SEED_TRAIN_VIDEOS} videos", flush=True)
    print(f"{'precision':<10}{'compile':<9}{'samples/s':>11}{'epoch s':>9}{'peak GB':>9}  fits {MIG_SLICE_GB} GB",
          flush=True)
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    runnable = []
    for precision, plan in plans(device):
        if isinstance(plan, str):
            print(f"{precision:<10}skipped: {plan}", flush=True)
        else:
            runnable.append((precision, plan))
    # Every eager row first: compilation is slow, and a time limit should cut compiled rows only.
    for compiled in (False, True) if args.compile else (False,):
        for precision, plan in runnable:
            # Each row as in a fresh process: PyTorch's TF32 defaults, then what the plan sets.
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32
            plan.apply_float32_math()
            print(f"{precision:<10}{str(compiled):<9}{row(plan, compiled, args, device)}", flush=True)


def row(plan: PrecisionPlan, compiled: bool, args, device: torch.device) -> str:
    try:
        r = measure(plan, compiled, args, device)
    except Exception as exc:  # noqa: BLE001 - one failed configuration must not hide the others
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if device.type != "cuda":
        return f"{r['samples_s']:>11.1f}{r['epoch_s']:>9.1f}{'-':>9}  -"
    fits = "yes" if r["peak_gb"] < MIG_SLICE_GB else "no"
    return f"{r['samples_s']:>11.1f}{r['epoch_s']:>9.1f}{r['peak_gb']:>9.2f}  {fits}"

if __name__ == "__main__":
    main()
