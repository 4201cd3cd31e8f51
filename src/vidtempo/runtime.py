"""Device, precision, thread and random-number set-up shared by training and inference."""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DEFAULT_DEVICE, PRECISIONS
from .errors import ConfigError

# Where commands and the extractor run unless told otherwise: "auto" is CUDA when a GPU is present, else the CPU.


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


# Compute capabilities: Ampere (8.0) has bf16 and TF32 tensor cores; Volta (7.0) has fp16 tensor cores.
NATIVE_BF16_CAPABILITY = (8, 0)
FP16_TENSOR_CORE_CAPABILITY = (7, 0)
AMP_DTYPES = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def choose_precision(
    requested: str, device_type: str, capability: tuple[int, int] | None = None, cpu_fast_bf16: bool = False
) -> tuple[str, str]:
    """The precision a run uses (``fp32``, ``tf32``, ``bf16`` or ``fp16``) and why, from the device alone.

    ``capability`` is the CUDA compute capability (needed for ``cuda``); ``cpu_fast_bf16`` says whether the
    CPU multiplies bf16 in hardware. A choice the hardware cannot honour is refused with a ConfigError.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device_type == "cuda":
        if capability is None:
            raise ValueError("choose_precision: a CUDA device needs its compute capability")
        return _choose_on_cuda(requested, tuple(capability))
    return _choose_off_cuda(requested, device_type, cpu_fast_bf16)


def _choose_on_cuda(requested: str, capability: tuple[int, int]) -> tuple[str, str]:
    cc = f"compute capability {capability[0]}.{capability[1]}"
    native_bf16 = capability >= NATIVE_BF16_CAPABILITY
    if requested == "auto":
        if native_bf16:
            return "bf16", f"auto: bf16 autocast, native on this GPU ({cc})"
        if capability >= FP16_TENSOR_CORE_CAPABILITY:
            return "fp16", f"auto: fp16 autocast with a gradient scaler; this GPU ({cc}) has no native bf16"
        return "fp32", f"auto: fp32; this GPU ({cc}) has neither bf16 nor fp16 tensor cores"
    if requested in ("bf16", "tf32") and not native_bf16:
        # Emulated bf16 gains nothing over fp32, and TF32 does not exist before compute capability 8.0.
        raise ConfigError(f"precision {requested} needs a GPU of compute capability 8.0 or later, this one has "
                          f"{capability[0]}.{capability[1]}; use fp16 or fp32")
    return requested, {
        "fp32": "requested: fp32, TF32 off for matmuls and cuDNN",
        "tf32": "requested: fp32 storage with TF32 tensor-core matmuls and cuDNN",
        "bf16": f"requested: bf16 autocast, native on this GPU ({cc})",
        "fp16": f"requested: fp16 autocast with a gradient scaler ({cc})",
    }[requested]


def _choose_off_cuda(requested: str, device_type: str, cpu_fast_bf16: bool) -> tuple[str, str]:
    if requested in ("fp16", "tf32"):
        raise ConfigError(f"precision {requested} needs a CUDA GPU; on the {device_type} use fp32 or bf16")
    fast = device_type == "cpu" and cpu_fast_bf16
    if requested == "auto":
        if fast:
            return "bf16", "auto: bf16 autocast; this CPU multiplies bf16 in hardware (AMX or AVX512-BF16)"
        return "fp32", f"auto: fp32; this {device_type} has no fast bf16 matrix instructions"
    if requested == "bf16":
        return "bf16", "requested: bf16 autocast" + ("" if fast else f" (emulated on this {device_type}: slower)")
    return "fp32", "requested: fp32"


class PrecisionPlan:
    """How a run computes: autocast dtype, TF32 switches and, for fp16, a gradient scaler.

    A training step is ``with plan.autocast(): loss = ...``, ``plan.backward(loss)``,
    ``plan.step(optimizer, parameters, max_norm)``. The scaler's state travels in checkpoints
    (``checkpoint_entries`` / ``load_checkpoint_entries``) so a resumed fp16 run continues exactly.
    """

    def __init__(self, name: str, reason: str, device_type: str) -> None:
        self.name, self.reason, self.device_type = name, reason, device_type
        self.amp_dtype = AMP_DTYPES[name]
        self.scaler = torch.amp.GradScaler(device_type) if name == "fp16" else None

    @classmethod
    def for_device(cls, requested: str, device: torch.device) -> "PrecisionPlan":
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        fast = cpu_has_fast_bf16() if device.type == "cpu" else False
        return cls(*choose_precision(requested, device.type, capability, fast), device.type)

    def apply_float32_math(self) -> None:
        """``fp32`` turns TF32 off for CUDA matmuls and cuDNN (PyTorch leaves it on for cuDNN), ``tf32`` turns
        it on. These are PyTorch's process-wide switches; ``bf16`` and ``fp16`` leave them as they are."""
        if self.device_type == "cuda" and self.name in ("fp32", "tf32"):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.name == "tf32"

    def autocast(self):
        return autocast(torch.device(self.device_type), self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer, parameters, max_norm: float) -> None:
        """Clip the gradients' norm to ``max_norm`` and step; with a scaler, the gradients are unscaled
        before clipping and a step whose gradients overflowed is skipped (the scale then shrinks)."""
        if self.scaler is None:
            torch.nn.utils.clip_grad_norm_(parameters, max_norm)
            optimizer.step()
            return
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        self.scaler.step(optimizer)
        self.scaler.update()

    def record(self) -> dict[str, str]:
        """What a run record says about precision."""
        return {"precision": self.name, "precision_reason": self.reason}

    def checkpoint_entries(self) -> dict:
        return {} if self.scaler is None else {"grad_scaler_state_dict": self.scaler.state_dict()}

    def load_checkpoint_entries(self, payload) -> None:
        """Continue with a checkpoint's scaler state; without one (a run saved in another precision) the
        scaler starts afresh."""
        if self.scaler is not None and payload.get("grad_scaler_state_dict"):
            self.scaler.load_state_dict(payload["grad_scaler_state_dict"])


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting on ``device``, or None for float32 (see PrecisionPlan)."""
    return PrecisionPlan.for_device(precision, device).amp_dtype


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


# --------------------------------------------------------------------------------------------- threads
# Where a container's CPU limit is read: cgroup v2's cpu.max, or cgroup v1's quota and period.
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU time this process's cgroup may use, in cores (``docker --cpus``, a Kubernetes limit); None
    when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cores(root: Path = CGROUP_ROOT) -> tuple[int, str]:
    """``(cores, why)``: the cores this process may run on (its affinity, as ``taskset`` sets it), fewer when
    its cgroup's CPU limit is lower; not ``os.cpu_count()``, which counts the machine's."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(root)
    if limit is not None and limit < affinity:
        return max(1, int(limit)), f"cgroup CPU limit {limit:g}"
    return affinity, "CPU affinity"


@dataclass(frozen=True)
class ThreadPlan:
    """How many threads the model uses, and why."""

    cores: int
    reason: str
    torch_threads: int

    @classmethod
    def choose(cls, threads: int | None = None) -> "ThreadPlan":
        """``threads`` when given (``--threads``), else the usable cores (``usable_cores``)."""
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"--threads must be at least 1, got {threads}")
            return cls(threads, "--threads", threads)
        cores, reason = usable_cores()
        return cls(cores, reason, cores)

    def apply(self) -> "ThreadPlan":
        global _APPLIED
        torch.set_num_threads(self.torch_threads)
        _APPLIED = self
        return self

    def record(self) -> dict[str, Any]:
        return {"threads": self.torch_threads, "threads_reason": self.reason,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "OpenMP's default")}


_APPLIED: ThreadPlan | None = None


def thread_plan(threads: int | None = None) -> ThreadPlan:
    return ThreadPlan.choose(threads)


def thread_record() -> dict[str, Any]:
    """What a run record says of its threads: the plan a command applied, else torch's own choice."""
    if _APPLIED is not None and _APPLIED.torch_threads == torch.get_num_threads():
        return _APPLIED.record()
    return {"threads": torch.get_num_threads(), "threads_reason": "torch's default",
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "OpenMP's default")}
