"""hsm: parameter sweeps on every machine you can reach.

The library entry points are :func:`hsm.run` and :func:`hsm.results` (see
:mod:`hsm.api`); they are imported on first use, so that ``import hsm`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("run", "results", "results_table", "RunResult", "ResultRow")


def __getattr__(name: str) -> Any:
    if name in _API:
        from hsm import api

        return getattr(api, name)
    raise AttributeError(f"module 'hsm' has no attribute {name!r}")
