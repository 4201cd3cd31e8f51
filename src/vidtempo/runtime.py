"""Device, precision and random-number set-up shared by training and inference."""

from __future__ import annotations

import contextlib
import random
import warnings

import numpy as np
import torch

from .errors import ConfigError

# Where commands and the extractor run unless told otherwise: "auto" is CUDA when a GPU is present, else the CPU.
DEFAULT_DEVICE = "auto"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``cuda`` without a GPU falls back to the CPU with one warning; ``auto`` picks CUDA when present."""
    name = str(device or DEFAULT_DEVICE)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA is not available; using the CPU instead", RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    return resolved


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting, or None for float32.

    ``auto`` uses bf16 on GPUs that support it and on CPUs with AMX or AVX512-BF16 (where the full model
    trains about 2.4 times faster, see benchmarks/RESULTS.md), float32 elsewhere.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return None
    raise ConfigError(f"precision must be auto, fp32 or bf16, got {precision!r}")


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (for example a run's seed and an epoch number)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
