"""The ``tlseg`` command line: argparse and progress bars over the public API
(:mod:`tlseg`). ``tlseg --help`` is instant: heavy imports happen inside the commands."""

from .main import main

__all__ = ["main"]
