"""Expansion of a sweep spec into tasks.

Order (stable; task numbers 1..N follow it): the factors are the grid keys in file
order, then the paired groups in file order; the last factor varies fastest, as in
:func:`itertools.product`. A paired group contributes its i-th value of every key at
once. ``combinations`` replaces grid and paired by its explicit list of tasks. The
``random`` draws are the last factor: draw i sets every random key at once. Tasks that
match every key of an ``exclude`` entry are dropped, then the ``include`` tasks are
appended in file order. Defaults are merged underneath every task (a swept key wins over
a default of the same name). In each task's mapping the swept keys come first, in factor
order, then the remaining defaults in file order. ``max_runs`` keeps the first N tasks.

Random draws use :class:`random.Random` seeded with ``seed``, one draw per parameter in
file order: ``uniform`` is ``Random.uniform``; ``loguniform`` is ``exp`` of a uniform draw
between the logs; ``randint`` is ``Random.randint`` (both ends included); ``choice`` is the
value at ``Random.randrange(len)``. These methods give the same numbers on every Python
version hsm supports, so a sweep expands to the same tasks on every resume.

Example: ``grid: {a: [1, 2], b: [x, y]}`` gives (a=1,b=x), (a=1,b=y), (a=2,b=x), (a=2,b=y).

The yielded mappings are fresh dicts, but list and mapping values are shared
between tasks: do not mutate them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from itertools import chain, islice, product
from typing import Any

from hsm.spec.sweep import Distribution, RandomDesign, SweepSpec, param_name

Pairs = tuple[tuple[str, Any], ...]


def full_count(spec: SweepSpec) -> int:
    """The number of tasks before ``max_runs`` is applied.

    Arithmetic only, unless ``exclude`` is given: then the tasks are expanded and counted.
    """
    if spec.exclude:
        return sum(1 for _ in _designed(spec)) + len(spec.include)
    if spec.combinations:
        sizes = [len(spec.combinations)]
    else:
        sizes = [len(values) for values in spec.grid.values()]
        sizes += [len(next(iter(group.values()))) for group in spec.paired if group]
    if spec.random is not None:
        sizes.append(spec.random.n)
    if not sizes:
        return len(spec.include)
    return math.prod(sizes) + len(spec.include)


def count_tasks(spec: SweepSpec) -> int:
    """The number of tasks, capped by ``max_runs`` (arithmetic only, nothing expanded)."""
    total = full_count(spec)
    return total if spec.max_runs is None else min(total, spec.max_runs)


def _draw(rng: random.Random, dist: Distribution) -> Any:
    if dist.kind == "uniform":
        return rng.uniform(dist.args[0], dist.args[1])
    if dist.kind == "loguniform":
        return math.exp(rng.uniform(math.log(dist.args[0]), math.log(dist.args[1])))
    if dist.kind == "randint":
        return rng.randint(dist.args[0], dist.args[1])
    return dist.args[rng.randrange(len(dist.args))]


def random_draws(design: RandomDesign) -> list[Pairs]:
    """The ``n`` draws of ``sweep.random``, the same for the same seed on every run."""
    rng = random.Random(design.seed)
    items = list(design.params.items())
    return [tuple((key, _draw(rng, dist)) for key, dist in items) for _ in range(design.n)]


def _factors(spec: SweepSpec) -> list[list[Pairs]]:
    if spec.combinations:
        factors = [[tuple(entry.items()) for entry in spec.combinations]]
    else:
        factors = [[((key, value),) for value in values] for key, values in spec.grid.items()]
    for group in spec.paired:
        columns = list(group.items())
        length = len(columns[0][1]) if columns else 0
        factors.append([tuple((key, values[i]) for key, values in columns) for i in range(length)])
    if spec.random is not None:
        factors.append(random_draws(spec.random))
    return factors


def _same(a: Any, b: Any) -> bool:
    """Equal values, where true is not 1 and 1 is 1.0."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _excluded(task: dict[str, Any], rules: list[Pairs]) -> bool:
    missing = object()
    return any(all(_same(task.get(key, missing), value) for key, value in rule) for rule in rules)


def _designed(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """The swept part of every task (grid, paired, random or combinations, minus exclude)."""
    factors = _factors(spec)
    if not factors:
        return
    rules = [
        tuple((param_name(key), value) for key, value in rule.items()) for rule in spec.exclude
    ]
    for combo in product(*factors):
        task: dict[str, Any] = {}
        for pairs in combo:
            task.update(pairs)
        if rules:
            names = {param_name(key): value for key, value in task.items()}
            if _excluded(names, rules):
                continue
        yield task


def _remaining_defaults(spec: SweepSpec) -> Pairs:
    swept = {param_name(key) for key in spec.grid}
    for group in spec.paired:
        swept.update(param_name(key) for key in group)
    if spec.random is not None:
        swept.update(param_name(key) for key in spec.random.params)
    return tuple(
        (key, value) for key, value in spec.defaults.items() if param_name(key) not in swept
    )


def iter_tasks(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Yield the parameters of every task, in the order described in the module docstring."""
    rest = _remaining_defaults(spec)
    every = tuple(spec.defaults.items())
    varying = bool(spec.combinations)
    tasks: Iterable[tuple[bool, dict[str, Any]]] = chain(
        ((varying, task) for task in _designed(spec)),
        ((True, dict(task)) for task in spec.include),
    )
    if spec.max_runs is not None:
        tasks = islice(tasks, spec.max_runs)
    for check, task in tasks:
        if check:
            names = {param_name(key) for key in task}
            task.update((key, value) for key, value in every if param_name(key) not in names)
        else:
            task.update(rest)
        yield task
