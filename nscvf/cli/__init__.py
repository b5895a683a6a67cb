"""The ``nscvf`` command line: :mod:`~nscvf.cli.main` (the parser and the everyday commands),
:mod:`~nscvf.cli.research` (teach, relearn, bench, gold) and :mod:`~nscvf.cli.common` (what they share).
``python -m nscvf.cli`` and the ``nscvf`` console script both run :func:`main`."""

from nscvf.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
