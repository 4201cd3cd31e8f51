"""How the package's names are imported: on first use, from the paths of earlier releases, and from optional
extras (``require_extra``: a missing one is named, with its pip line, in one line).

``lazy_exports`` gives a package the names it exports without importing their modules until one is used,
so that ``import vidtempo`` and ``vidtempo --help`` do not load torch.

Each old module path still imports the module that moved (the same module object, so patching either name
patches both), with a ``DeprecationWarning`` naming the new path. Where an old module's path is now a package
of the same name (``vidtempo.model``, ``vidtempo.ensemble``, ``vidtempo.cli``, ``vidtempo.demo``), the package
exports its main names, and the old module's other names still resolve, with the same warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any, Callable

_EXTRACT_MODULES = ("backbones", "catalog", "efficientnet_lite", "extractor", "multiscale", "report",
                    "resume", "settings", "shards", "video")

# old module path -> the path it moved to
MOVED_MODULES: dict[str, str] = {
    "vidtempo.store": "vidtempo.features.store",
    "vidtempo.synthetic": "vidtempo.features.synthetic",
    "vidtempo.sharding": "vidtempo.features.sharding",
    "vidtempo.extract": "vidtempo.features.extract",
    **{f"vidtempo.extract.{name}": f"vidtempo.features.extract.{name}" for name in _EXTRACT_MODULES},
    "vidtempo.extract.cli": "vidtempo.cli.extract",
    "vidtempo.loss": "vidtempo.model.loss",
    "vidtempo.trainer": "vidtempo.training.trainer",
    "vidtempo.training_run": "vidtempo.training.run",
    "vidtempo.members": "vidtempo.training.members",
    "vidtempo.data": "vidtempo.training.data",
    "vidtempo.sampling": "vidtempo.training.sampling",
    "vidtempo.distributed": "vidtempo.training.distributed",
    "vidtempo.ensemble_fit": "vidtempo.ensemble.fit",
    "vidtempo.folds": "vidtempo.ensemble.folds",
    "vidtempo.tta": "vidtempo.ensemble.tta",
    "vidtempo.calibration": "vidtempo.ensemble.calibration",
    "vidtempo.trust": "vidtempo.ensemble.trust",
    "vidtempo.evaluation": "vidtempo.ensemble.evaluation",
    "vidtempo.metrics": "vidtempo.ensemble.metrics",
    "vidtempo.report": "vidtempo.ensemble.report",
    "vidtempo.classify": "vidtempo.inference.classify",
    "vidtempo.timeline": "vidtempo.inference.timeline",
    "vidtempo.library": "vidtempo.inference.library",
    "vidtempo.montage": "vidtempo.demo.montage",
    "vidtempo.cli_options": "vidtempo.cli.options",
    "vidtempo.demo_data": "vidtempo.demo.videos",
}

# old module path that is now a package -> the module that holds the old module's names
MOVED_INTO_PACKAGE: dict[str, str] = {
    "vidtempo.model": "vidtempo.model.temporal",
    "vidtempo.ensemble": "vidtempo.ensemble.ensemble",
    "vidtempo.cli": "vidtempo.cli.commands",
    "vidtempo.demo": "vidtempo.demo.run",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old module path with the module at its new path."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module) -> None:
        old, new = module.__name__, MOVED_MODULES[module.__name__]
        # stacklevel 2 skips importlib's own frames: the warning names the line that imported the old path.
        warnings.warn(f"{old} is deprecated and will be removed: import {new}", DeprecationWarning, stacklevel=2)
        sys.modules[old] = importlib.import_module(new)  # the import system returns what sys.modules holds


def install() -> None:
    """Serve the old module paths (before the path finder, which would load a second copy of a module)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())


def old_module_names(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: the names its old module had, with a DeprecationWarning."""
    source = MOVED_INTO_PACKAGE[package]

    def __getattr__(name: str) -> Any:
        module = importlib.import_module(source)
        if name.startswith("__") or not hasattr(module, name):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warnings.warn(f"{package}.{name} is deprecated and will be removed: import it from {source}",
                      DeprecationWarning, stacklevel=2)
        return getattr(module, name)

    return __getattr__


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name of ``exports`` (name -> relative module) is
    imported from its module on first use."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
            setattr(sys.modules[package], name, value)  # later uses find it without this hook
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def require_extra(module: str, extra: str, purpose: str) -> Any:
    """``module``, imported; when it cannot be, the one line that names the optional extra installing it (a
    ``VidtempoError``, which the CLI prints without a traceback and exits with status 2). A module that is
    there but fails on a missing dependency of its own says so in parentheses: installing the extra again
    brings that dependency too."""
    from .errors import VidtempoError

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        whole = getattr(exc, "name", None) in (module, module.split(".")[0])
        reason = "" if whole else f" ({str(exc).splitlines()[0]})"
        raise VidtempoError(f"{purpose} needs the {extra} extra: pip install 'vidtempo[{extra}]'{reason}") from None
