"""The backbones extraction offers: names, feature sizes, and which need torchvision.

Kept apart from ``backbones.py`` (which builds them, with torch) so that settings and the command line can
name and check a backbone without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import VidtempoError

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    feature_dim: int
    needs_torchvision: bool
    head_attr: str | None = None  # torchvision's classifier attribute, replaced to keep the pooled features


BACKBONE_SPECS: dict[str, BackboneSpec] = {
    DEFAULT_BACKBONE: BackboneSpec(1280, needs_torchvision=False),
    "efficientnet_v2_s": BackboneSpec(1280, needs_torchvision=True, head_attr="classifier"),
    "efficientnet_v2_m": BackboneSpec(1280, needs_torchvision=True, head_attr="classifier"),
    "resnet50": BackboneSpec(2048, needs_torchvision=True, head_attr="fc"),
    "resnet101": BackboneSpec(2048, needs_torchvision=True, head_attr="fc"),
}


def backbone_names() -> list[str]:
    return list(BACKBONE_SPECS)


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONE_SPECS[name]
    except KeyError:
        raise VidtempoError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONE_SPECS)})") from None


def feature_dim(name: str) -> int:
    return backbone_spec(name).feature_dim
