"""The offline demo: every stage on real sample videos, and the sample media the tests and benchmarks use.

``videos`` cuts labelled clips from the sample videos shipped in PyPI packages (and renders slides);
``montage`` joins clips into long labelled videos for timelines; ``run`` runs extract, train, evaluate and
predict on them (``vidtempo demo``). Exports ``run_demo``.
"""

from .._imports import old_module_names
from .run import run_demo

__all__ = ["run_demo"]

__getattr__ = old_module_names(__name__)
