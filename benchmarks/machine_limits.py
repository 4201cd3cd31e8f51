"""What this machine could do at best: matmul rate (fp32, bf16) and the model's FLOPs per training sample.

- Matmul rate: ``torch.matmul`` on square matrices (2048 and 4096 by default), best of several repeats,
  with the current torch thread count.
- Model FLOPs: counted analytically from the architecture (input projection, LSTM gates per layer and
  direction, attention in_proj / QK^T / AV / out_proj, pooling MLP, classifier), forward = 2 x MACs,
  training = 3 x forward (backward ~ 2 x forward). Elementwise ops, LayerNorm, softmax are left out (small).
  Cross-checked with ``torch.utils.flop_counter.FlopCounterMode`` on a real forward pass -- which does NOT
  count the fused LSTM op (aten::lstm / mkldnn_rnn have no FLOP formula), so the LSTM part is cross-checked
  separately on an unrolled LSTM written with ``torch.mm`` of the same shapes.
- Upper bound samples/s = matmul GFLOP/s / training GFLOP per sample (ignores the LSTM's sequential
  dependency, small-matrix inefficiency, memory traffic: real training will be well below it).

Run:

    python benchmarks/machine_limits.py [--threads N] [--frames 56] [--sizes 2048 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidtempo.config import ModelConfig
from vidtempo.model.temporal import SuperEnhancedTemporalModel

MEAN_FRAMES = 56  # mean of 40..73 frames


# ------------------------------------------------------------------------------------------ matmul rate
def matmul_gflops(dtype: torch.dtype = torch.float32, sizes=(2048, 4096), repeats: int = 5) -> dict[int, float]:
    """Best-of-``repeats`` GFLOP/s of ``torch.matmul`` on n x n matrices, per size."""
    out = {}
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        torch.matmul(a, b)  # warm-up (kernel selection, oneDNN/AMX initialisation)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t)
        out[n] = 2.0 * n ** 3 / best / 1e9
    return out


_RATE_CACHE: dict[tuple, float] = {}


def machine_gflops(precision: str = "fp32", sizes=(2048, 4096), repeats: int = 5) -> float:
    """Best matmul GFLOP/s over ``sizes`` for ``fp32`` or ``bf16`` (cached per process and thread count)."""
    key = (precision, tuple(sizes), repeats, torch.get_num_threads())
    if key not in _RATE_CACHE:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        _RATE_CACHE[key] = max(matmul_gflops(dtype, sizes, repeats).values())
    return _RATE_CACHE[key]


# -------------------------------------------------------------------------------------------- model FLOPs
def model_macs(config: ModelConfig | dict | None = None, frames: int = MEAN_FRAMES) -> dict[str, float]:
    """Multiply-accumulates of one forward pass of one video of ``frames`` steps, per part."""
    c = config if isinstance(config, ModelConfig) else ModelConfig(**(config or {}))
    t, d, h, C = frames, c.feature_dim, c.hidden_dim, c.num_classes
    dirs = 2 if c.bidirectional else 1
    w = h * dirs
    h1, h2, h3 = h, h * 2 // 3, h // 3
    lstm = 0
    for layer in range(c.num_lstm_layers):
        inp = h if layer == 0 else w
        lstm += dirs * t * 4 * h * (inp + h)  # W_ih x + W_hh h per gate, per step
    return {
        "input_projection": t * d * h,
        "lstm": lstm,
        "attention_proj": t * w * 3 * w + t * w * w,  # in_proj (q, k, v) + out_proj
        "attention_scores": 2 * t * t * w,  # QK^T and AV over all heads
        "pooling": t * w * h + t * h + t * w,  # Linear(w, h), Linear(h, 1), weighted sum
        "classifier": w * h1 + h1 * h2 + h2 * h3 + h3 * C,
    }


def model_flops(config: ModelConfig | dict | None = None, frames: int = MEAN_FRAMES) -> dict[str, float]:
    """Forward and training FLOPs per sample (2 x MACs; training = 3 x forward)."""
    macs = model_macs(config, frames)
    fwd = 2.0 * sum(macs.values())
    return {"forward": fwd, "train": 3.0 * fwd, "parts": {k: 2.0 * v for k, v in macs.items()}}


def counted_forward_flops(config: ModelConfig | dict | None = None, frames: int = MEAN_FRAMES) -> dict[str, Any]:
    """FlopCounterMode on a real forward (one video, train mode), and on an unrolled LSTM of the same shapes."""
    c = config if isinstance(config, ModelConfig) else ModelConfig(**(config or {}))
    # train mode: in eval mode nn.MultiheadAttention takes its fused fast path, which has no FLOP formula
    model = SuperEnhancedTemporalModel.from_config(c).train()
    x = torch.randn(1, frames, c.feature_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([frames]))
    by_op = {str(k): float(v) for k, v in counter.get_flop_counts()["Global"].items()}
    total = float(counter.get_total_flops())

    # Unrolled LSTM (same matrix shapes as nn.LSTM), counted op by op.
    dirs = 2 if c.bidirectional else 1
    h = c.hidden_dim
    with torch.no_grad(), FlopCounterMode(display=False) as lstm_counter:
        inp = torch.randn(frames, h)
        for layer in range(c.num_lstm_layers):
            outs = []
            for _ in range(dirs):
                w_ih = torch.randn(4 * h, inp.shape[1])
                w_hh = torch.randn(4 * h, h)
                xs = torch.mm(inp, w_ih.t())  # all steps at once, as cuDNN/oneDNN do
                state = torch.zeros(1, h)
                hs = []
                for step in range(frames):
                    gates = xs[step : step + 1] + torch.mm(state, w_hh.t())
                    state = torch.tanh(gates[:, :h])  # stand-in for the gate math (not counted)
                    hs.append(state)
                outs.append(torch.cat(hs))
            inp = torch.cat(outs, dim=1)
    return {"forward_total": total, "by_op": by_op, "unrolled_lstm": float(lstm_counter.get_total_flops())}


def implied_samples_per_s(precision: str, config: ModelConfig | dict | None = None, frames: int = MEAN_FRAMES,
                          **rate_kwargs) -> float:
    """Upper bound on training samples/s: machine matmul rate / training FLOPs per sample."""
    return machine_gflops(precision, **rate_kwargs) * 1e9 / model_flops(config, frames)["train"]


def percent_of_limit(samples_per_s: float, precision: str, config: ModelConfig | dict | None = None,
                     frames: int = MEAN_FRAMES, **rate_kwargs) -> float:
    """A measured training rate as a percentage of this machine's matmul-bound limit for ``precision``."""
    return 100.0 * samples_per_s / implied_samples_per_s(precision, config, frames, **rate_kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--frames", type=int, default=MEAN_FRAMES)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")

    config = ModelConfig()
    params = sum(p.numel() for p in SuperEnhancedTemporalModel.from_config(config).parameters())
    flops = model_flops(config, args.frames)
    print(f"\nModel FLOPs per sample, default config ({params / 1e6:.1f} M params), T={args.frames}:")
    for part, value in flops["parts"].items():
        print(f"  {part:<18} {value / 1e9:8.3f} GFLOP fwd ({100 * value / flops['forward']:5.1f} %)")
    counted = counted_forward_flops(config, args.frames)
    non_lstm = flops["forward"] - flops["parts"]["lstm"]
    print(f"  cross-check: FlopCounterMode forward total {counted['forward_total'] / 1e9:.3f} GFLOP "
          f"(ops: {', '.join(f'{k}={v / 1e9:.3f}G' for k, v in counted['by_op'].items())})")
    print(f"    vs analytic without LSTM {non_lstm / 1e9:.3f} GFLOP (FlopCounterMode does not count aten::lstm)")
    print(f"    unrolled-LSTM count {counted['unrolled_lstm'] / 1e9:.3f} GFLOP vs analytic LSTM "
          f"{flops['parts']['lstm'] / 1e9:.3f} GFLOP")

    rows = []
    for precision in ("fp32", "bf16"):
        rates = matmul_gflops(torch.bfloat16 if precision == "bf16" else torch.float32, args.sizes, args.repeats)
        best = max(rates.values())
        _RATE_CACHE[(precision, tuple(args.sizes), args.repeats, torch.get_num_threads())] = best
        rows.append((precision, rates, best, best * 1e9 / flops["train"]))

    print(f"\n{'precision':<10} " + " ".join(f"{'matmul ' + str(n):>13}" for n in args.sizes)
          + f" {'best GFLOP/s':>13} {'fwd GFLOP/sample':>17} {'train GFLOP/sample':>19} {'limit samples/s':>16}")
    for precision, rates, best, limit in rows:
        print(f"{precision:<10} " + " ".join(f"{rates[n]:13.1f}" for n in args.sizes)
              + f" {best:13.1f} {flops['forward'] / 1e9:17.2f} {flops['train'] / 1e9:19.2f} {limit:16.2f}")


if __name__ == "__main__":
    main()
