"""Expansion of a sweep into tasks: order, defaults, max_runs, counting, speed."""

from __future__ import annotations

import itertools
import time
from typing import Any

from hsm.spec.expand import count_tasks, full_count, iter_tasks
from hsm.spec.sweep import SweepSpec


def spec(**kwargs: Any) -> SweepSpec:
    return SweepSpec(script="train.py", **kwargs)


def test_grid_order_is_like_itertools_product() -> None:
    s = spec(grid={"a": [1, 2], "b": ["x", "y", "z"]})
    tasks = list(iter_tasks(s))
    expected = [{"a": a, "b": b} for a, b in itertools.product([1, 2], ["x", "y", "z"])]
    assert tasks == expected
    assert [list(t) for t in tasks] == [["a", "b"]] * 6
    assert count_tasks(s) == 6


def test_paired_groups_are_zipped_then_crossed_after_the_grid() -> None:
    s = spec(
        grid={"seed": [1, 2]},
        paired=[
            {"model.name": ["small", "large"], "model.width": [128, 1024]},
            {"opt": ["adam", "sgd"], "lr": [0.001, 0.1]},
        ],
    )
    tasks = list(iter_tasks(s))
    assert count_tasks(s) == len(tasks) == 2 * 2 * 2
    assert tasks[0] == {
        "seed": 1,
        "model.name": "small",
        "model.width": 128,
        "opt": "adam",
        "lr": 0.001,
    }
    assert tasks[1] == {
        "seed": 1,
        "model.name": "small",
        "model.width": 128,
        "opt": "sgd",
        "lr": 0.1,
    }
    assert tasks[2]["model.name"] == "large" and tasks[2]["model.width"] == 1024
    assert tasks[4]["seed"] == 2
    for task in tasks:
        pairs = {("small", 128), ("large", 1024)}
        assert (task["model.name"], task["model.width"]) in pairs
        assert (task["opt"], task["lr"]) in {("adam", 0.001), ("sgd", 0.1)}


def test_paired_only() -> None:
    s = spec(paired=[{"a": [1, 2, 3], "b": [4, 5, 6]}])
    assert list(iter_tasks(s)) == [{"a": 1, "b": 4}, {"a": 2, "b": 5}, {"a": 3, "b": 6}]


def test_defaults_go_underneath_and_swept_values_win() -> None:
    s = spec(
        grid={"seed": [1, 2]},
        paired=[{"model.width": [8]}],
        defaults={"batch_size": 32, "seed": 0, "model.width": 4, "name": "x"},
    )
    tasks = list(iter_tasks(s))
    assert tasks == [
        {"seed": 1, "model.width": 8, "batch_size": 32, "name": "x"},
        {"seed": 2, "model.width": 8, "batch_size": 32, "name": "x"},
    ]
    assert list(tasks[0]) == ["seed", "model.width", "batch_size", "name"]


def test_a_prefixed_sweep_key_replaces_the_plain_default() -> None:
    s = spec(grid={"+seed": [1]}, defaults={"seed": 0, "++other": 1})
    assert list(iter_tasks(s)) == [{"+seed": 1, "++other": 1}]


def test_max_runs_keeps_the_first_tasks() -> None:
    s = spec(grid={"a": list(range(10)), "b": [0, 1]}, max_runs=5)
    tasks = list(iter_tasks(s))
    assert len(tasks) == count_tasks(s) == 5
    assert tasks == [
        {"a": 0, "b": 0},
        {"a": 0, "b": 1},
        {"a": 1, "b": 0},
        {"a": 1, "b": 1},
        {"a": 2, "b": 0},
    ]
    assert full_count(s) == 20
    assert count_tasks(spec(grid={"a": [1, 2]}, max_runs=100)) == 2


def test_expansion_is_stable() -> None:
    s = spec(grid={"a": [3, 1, 2], "b": ["z", "a"]}, paired=[{"c": [1, 2]}], defaults={"d": 0})
    first = list(iter_tasks(s))
    assert first == list(iter_tasks(s))
    assert len(first) == count_tasks(s) == 12


def test_tasks_are_fresh_dicts() -> None:
    s = spec(grid={"a": [1, 2]})
    tasks = list(iter_tasks(s))
    tasks[0]["a"] = 99
    assert list(iter_tasks(s))[0] == {"a": 1}


def test_list_values_are_single_points() -> None:
    s = spec(grid={"layers": [[64, 64], [128]]})
    assert list(iter_tasks(s)) == [{"layers": [64, 64]}, {"layers": [128]}]


def test_counting_a_huge_grid_is_arithmetic() -> None:
    grid = {f"k{i}": list(range(10)) for i in range(8)}  # 10^8 tasks
    s = spec(grid=grid, paired=[{"x": list(range(1000)), "y": list(range(1000))}])
    started = time.perf_counter()
    assert count_tasks(s) == 10**11
    assert count_tasks(spec(grid=grid, max_runs=7)) == 7
    assert time.perf_counter() - started < 0.1
    first = next(iter_tasks(s))
    assert first["k0"] == 0 and first["x"] == 0


def test_expanding_100000_tasks_is_fast() -> None:
    s = spec(
        grid={
            "seed": list(range(100)),
            "optimizer.lr": [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
            "wd": [0.0, 0.1],
        },
        paired=[{"model.name": [f"m{i}" for i in range(100)], "model.width": list(range(100))}],
        defaults={"batch_size": 32, "epochs": 10},
    )
    assert count_tasks(s) == 100_000
    started = time.perf_counter()
    n = sum(1 for _ in iter_tasks(s))
    elapsed = time.perf_counter() - started
    assert n == 100_000
    assert elapsed < 1.0, f"expanding 100,000 tasks took {elapsed:.3f}s"
