"""Command-line options that several commands share, each declared once, and help text that reads each
default from where it is defined (a config dataclass field or a function parameter), so it cannot drift."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import VidtempoError
from ..config import DEFAULT_DEVICE, INFERENCE_PRECISION, INFERENCE_PRECISIONS
from ..features.store import MULTISCALE_SUFFIX


def default_of(owner: type | Callable[..., Any], name: str) -> Any:
    """The default of dataclass field ``name`` of ``owner``, or of parameter ``name`` of function ``owner``."""
    if dataclasses.is_dataclass(owner):
        field = next(f for f in dataclasses.fields(owner) if f.name == name)
        return field.default_factory() if field.default is dataclasses.MISSING else field.default
    return inspect.signature(owner).parameters[name].default


def with_default(text: str, owner: type | Callable[..., Any], name: str) -> str:
    """``text (default V)``, with V from ``default_of(owner, name)``."""
    return f"{text} (default {default_of(owner, name)})"


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=DEFAULT_DEVICE,
        help=f"cpu, cuda, cuda:N or auto (cuda when a GPU is present, else cpu; default {DEFAULT_DEVICE}); "
        "cuda without a GPU falls back to the cpu with a warning",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", default=INFERENCE_PRECISION, choices=INFERENCE_PRECISIONS,
        help="precision of the CNN and the ensemble: auto is bf16 where the hardware multiplies it fast (a GPU "
        f"of compute capability 8.0+, a CPU with AMX or AVX512-BF16), else fp32 (default {INFERENCE_PRECISION})",
    )


def add_runtime_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime", default="torch", choices=("auto", "torch", "onnx"),
        help="torch: PyTorch; onnx: ONNX Runtime (float32), on a folder from 'vidtempo export' or on checkpoints "
             "(exported once into CHECKPOINTS/.onnx/); auto: PyTorch where it runs in bf16 (GPUs, CPUs with bf16 "
             "hardware), else ONNX Runtime when installed (default %(default)s)")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads for the model (default: the cores this process may use: its CPU affinity, "
                             "or its cgroup's CPU limit when lower; fewer help on a machine busy with other work)")


def use_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (or the usable cores): called by a command after its arguments are checked, as it
    starts loading models (this imports torch).

    OpenMP's threads are told to sleep rather than spin while they wait for each other (OMP_WAIT_POLICY=PASSIVE,
    unless the environment sets a policy). A spinning thread holds a core another process needs: beside a
    second vidtempo process on 2 cores, epochs ran 10-20x slower spinning than sleeping, and a run that started
    on a quiet machine cannot know that another will start later (benchmarks/two_runs.py). Sleeping costs
    about 20-35% on a quiet machine for the demo's small model (benchmarks/busy_cpu.py), less for larger ones;
    it changes no number, only how threads wait. It must be set before torch starts OpenMP, hence here."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..runtime import thread_plan

    thread_plan(getattr(args, "threads", None)).apply()


def add_decode_limit_options(parser: argparse.ArgumentParser) -> None:
    """The bounds every command that decodes videos puts on one video (features.extract.settings.RunOptions)."""
    from ..features.extract.settings import RunOptions

    parser.add_argument("--max-decode-seconds", type=float, default=default_of(RunOptions, "max_decode_seconds"),
                        help=with_default("a video still decoding after this long fails (one error, the run goes on); "
                                          "a decoder that does not stop is killed and replaced", RunOptions,
                                          "max_decode_seconds"))
    parser.add_argument("--max-frame-pixels", type=int, default=default_of(RunOptions, "max_frame_pixels"),
                        help=with_default("a video whose frames have more pixels than this is refused before "
                                          "decoding (8K)", RunOptions, "max_frame_pixels"))


def decode_limits(args: argparse.Namespace) -> dict[str, Any]:
    """``--max-decode-seconds`` and ``--max-frame-pixels``, checked, as keyword arguments of the Python API."""
    from ..features.extract.settings import RunOptions

    options = RunOptions(max_decode_seconds=args.max_decode_seconds, max_frame_pixels=args.max_frame_pixels)
    return {"max_decode_seconds": options.max_decode_seconds, "max_frame_pixels": options.max_frame_pixels}


def add_quiet_option(parser: argparse.ArgumentParser, help: str = "no progress bars or progress lines") -> None:
    parser.add_argument("--quiet", action="store_true", help=help)


def add_checkpoints_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", required=True, nargs="+", type=Path,
                        help="a folder of best_*.pt (the members its ensemble.json names, if any), or checkpoint files")


def checkpoint_source(paths: list[Path]) -> Path | list[Path]:
    """What ``Ensemble.from_checkpoints`` takes: one folder or file as is, several files as a list. A path
    that does not exist is refused here, before torch is loaded to read checkpoints."""
    for path in paths:
        if not path.exists():
            raise VidtempoError(f"{path}: --checkpoints: no such file or folder")
    return paths[0] if len(paths) == 1 else paths


def add_tta_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--tta", action="store_true", help=help)


def add_suffix_option(
    parser: argparse.ArgumentParser,
    help: str = f"feature file suffix (default: {MULTISCALE_SUFFIX} or none, whichever train file exists)",
) -> None:
    parser.add_argument("--suffix", default=None, help=help)


def add_frames_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", default="auto", choices=("auto", "all"),
                        help="auto: a model trained on prefixes (training_config.prefix_lengths) embeds a video in "
                             "stages and stops once its answer is settled (its early-exit rule; TTA reads every "
                             "frame); all: embed every sampled frame (default %(default)s)")
