"""The ``vidtempo`` command, a thin layer over the Python API.

``commands`` builds the parser and runs each subcommand; ``options`` holds the options several commands
share; ``extract`` is ``vidtempo extract``. Exports ``main``.
"""

from .._imports import old_module_names
from .commands import main

__all__ = ["main"]

__getattr__ = old_module_names(__name__)
