"""Expansion of a sweep spec into tasks.

Order (stable; task numbers 1..N follow it): the factors are the grid keys in file
order, then the paired groups in file order; the last factor varies fastest, as in
:func:`itertools.product`. A paired group contributes its i-th value of every key at
once. Defaults are merged underneath every task (a swept key wins over a default of
the same name). In each task's mapping the swept keys come first, in factor order,
then the remaining defaults in file order. ``max_runs`` keeps the first N tasks.

Example: ``grid: {a: [1, 2], b: [x, y]}`` gives (a=1,b=x), (a=1,b=y), (a=2,b=x), (a=2,b=y).

The yielded mappings are fresh dicts, but list and mapping values are shared
between tasks: do not mutate them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice, product
from typing import Any

from hsm.spec.sweep import SweepSpec, param_name

Pairs = tuple[tuple[str, Any], ...]


def full_count(spec: SweepSpec) -> int:
    """The number of tasks before ``max_runs`` is applied."""
    sizes = [len(values) for values in spec.grid.values()]
    sizes += [len(next(iter(group.values()))) for group in spec.paired if group]
    return math.prod(sizes)


def count_tasks(spec: SweepSpec) -> int:
    """The number of tasks, capped by ``max_runs`` (arithmetic only, nothing expanded)."""
    total = full_count(spec)
    return total if spec.max_runs is None else min(total, spec.max_runs)


def _factors(spec: SweepSpec) -> list[list[Pairs]]:
    factors: list[list[Pairs]] = [
        [((key, value),) for value in values] for key, values in spec.grid.items()
    ]
    for group in spec.paired:
        columns = list(group.items())
        length = len(columns[0][1]) if columns else 0
        factors.append([tuple((key, values[i]) for key, values in columns) for i in range(length)])
    return factors


def _remaining_defaults(spec: SweepSpec) -> Pairs:
    swept = {param_name(key) for key in spec.grid}
    for group in spec.paired:
        swept.update(param_name(key) for key in group)
    return tuple(
        (key, value) for key, value in spec.defaults.items() if param_name(key) not in swept
    )


def iter_tasks(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Yield the parameters of every task, in the order described in the module docstring."""
    factors = _factors(spec)
    if not factors:
        return
    rest = _remaining_defaults(spec)
    combos: Iterator[tuple[Pairs, ...]] = product(*factors)
    if spec.max_runs is not None:
        combos = islice(combos, spec.max_runs)
    for combo in combos:
        task: dict[str, Any] = {}
        for pairs in combo:
            task.update(pairs)
        task.update(rest)
        yield task
