"""Sweep designs beyond a full grid: exclude, include, combinations and seeded random draws."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from hsm.errors import ConfigError
from hsm.spec.expand import count_tasks, iter_tasks
from hsm.spec.sweep import SweepSpec, load_sweep


def load(tmp_path: Path, text: str) -> SweepSpec:
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_sweep(path, tmp_path)


RANDOM = """\
    command: [bash, task.sh]
    sweep:
      random:
        n: 3
        seed: 0
        params:
          lr: {loguniform: [1.0e-5, 1.0e-2]}
          dropout: {uniform: [0, 0.5]}
          layers: {choice: [2, 4, 8]}
          width: {randint: [64, 512]}
    """


def test_random_draws_are_exact_for_a_seed(tmp_path: Path) -> None:
    spec = load(tmp_path, RANDOM)
    # random.Random's uniform, randint and randrange give these numbers on every supported
    # Python version; a change here changes every seeded sweep on resume.
    assert list(iter_tasks(spec)) == [
        {"lr": 0.003414016019207294, "dropout": 0.37897720147015124, "layers": 4, "width": 84},
        {"lr": 5.980675662697347e-05, "dropout": 0.25563736068430426, "layers": 4, "width": 465},
        {"lr": 0.003087156961026412, "dropout": 0.4838999974600857, "layers": 4, "width": 362},
    ]
    assert count_tasks(spec) == 3
    assert list(iter_tasks(load(tmp_path, RANDOM))) == list(iter_tasks(spec))
    other = load(tmp_path, RANDOM.replace("seed: 0", "seed: 1"))
    assert list(iter_tasks(other)) != list(iter_tasks(spec))


def test_random_is_crossed_with_the_grid_as_the_last_factor(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """\
        command: [bash, task.sh]
        sweep:
          grid: {seed: [1, 2]}
          random: {n: 2, params: {optimizer: {lr: {uniform: [0, 1]}}}}
        defaults: {steps: 5}
        """,
    )
    tasks = list(iter_tasks(spec))
    assert count_tasks(spec) == len(tasks) == 4
    assert [t["seed"] for t in tasks] == [1, 1, 2, 2]
    assert tasks[0]["optimizer.lr"] == tasks[2]["optimizer.lr"] != tasks[1]["optimizer.lr"]
    assert list(tasks[0]) == ["seed", "optimizer.lr", "steps"]


def test_exclude_drops_tasks_matching_every_key_and_include_appends(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """\
        command: [bash, task.sh]
        sweep:
          grid: {a: [1, 2, 3], b: [x, y], flag: [true, false]}
          exclude:
            - {a: 2}
            - {a: 3, b: y}
            - {flag: 1}
          include:
            - {a: 9, b: z, flag: true}
            - {a: 10, b: x}
        defaults: {flag: false, c: 5}
        """,
    )
    tasks = list(iter_tasks(spec))
    # flag: 1 is not true: booleans only match booleans.
    assert tasks == [
        {"a": 1, "b": "x", "flag": True, "c": 5},
        {"a": 1, "b": "x", "flag": False, "c": 5},
        {"a": 1, "b": "y", "flag": True, "c": 5},
        {"a": 1, "b": "y", "flag": False, "c": 5},
        {"a": 3, "b": "x", "flag": True, "c": 5},
        {"a": 3, "b": "x", "flag": False, "c": 5},
        {"a": 9, "b": "z", "flag": True, "c": 5},
        {"a": 10, "b": "x", "flag": False, "c": 5},
    ]
    assert count_tasks(spec) == 8


def test_max_runs_applies_after_exclude_and_include(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """\
        command: [bash, task.sh]
        sweep:
          grid: {a: [1, 2]}
          exclude: [{a: 1}]
          include: [{a: 7}, {a: 8}]
        max_runs: 2
        """,
    )
    assert list(iter_tasks(spec)) == [{"a": 2}, {"a": 7}]
    assert count_tasks(spec) == 2


def test_combinations_are_explicit_tasks_with_defaults_underneath(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """\
        command: [bash, task.sh]
        sweep:
          combinations:
            - {model: small, lr: 0.1}
            - {model: large, optimizer: {name: sgd}}
          random: {n: 2, seed: 3, params: {seed: {randint: [0, 9]}}}
          exclude: [{model: large, seed: 3}]
        defaults: {lr: 0.01}
        """,
    )
    tasks = list(iter_tasks(spec))
    assert tasks == [
        {"model": "small", "lr": 0.1, "seed": 3},
        {"model": "small", "lr": 0.1, "seed": 9},
        {"model": "large", "optimizer.name": "sgd", "seed": 9, "lr": 0.01},
    ]
    assert count_tasks(spec) == 3


def test_combinations_alone(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """\
        command: [bash, task.sh]
        sweep:
          combinations: [{a: 1}, {a: 2, b: [1, 2]}]
        """,
    )
    assert list(iter_tasks(spec)) == [{"a": 1}, {"a": 2, "b": [1, 2]}]
    assert count_tasks(spec) == 2


@pytest.mark.parametrize(
    ("sweep", "parts"),
    [
        ("grid: {lr: [1]}\n  exclude: [{lrr: 1}]", ["sweep.exclude[0].lrr", "'lr'", "line 4"]),
        ("grid: {a: [1], b: [2]}\n  include: [{a: 1}]", ["sweep.include[0]", "missing: b"]),
        ("grid: {a: [1]}\n  combinations: [{a: 1}]", ["sweep.combinations", "not both"]),
        ("combinations: []", ["sweep.combinations", "empty list"]),
        ("combinations: [{}]", ["sweep.combinations[0]", "at least one"]),
        ("random: {n: 1, params: {}}", ["sweep.random.params", "at least one"]),
        ("random: {n: 1, params: {a: [1, 2]}}", ["sweep.random.params.a", "distribution"]),
        ("random: {n: 1, params: {a: {uniform: [2, 1]}}}", ["low < high"]),
        ("random: {n: 1, params: {a: {uniform: [.nan, 1]}}}", ["finite"]),
        ("random: {n: 1, params: {a: {randint: [1]}}}", ["[low, high]"]),
        ("random: {n: 1, params: {a: {chioce: [1]}}}", ["did you mean 'choice'"]),
        ("random: {n: 1, seed: x, params: {a: {choice: [1]}}}", ["sweep.random.seed"]),
    ],
)
def test_bad_designs_name_the_key(tmp_path: Path, sweep: str, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"command: [bash, task.sh]\nsweep:\n  {sweep}\n")
    message = info.value.message
    assert "\n" not in message and "Traceback" not in message
    for part in parts:
        assert part in message, (part, message)


def test_expanding_100000_tasks_with_random_and_exclude_is_fast(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """\
        command: [bash, task.sh]
        sweep:
          grid: {seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], wd: [0.0, 0.1]}
          random: {n: 5000, params: {lr: {loguniform: [1.0e-5, 1.0e-2]}}}
          exclude: [{seed: 99}]
        """,
    )
    started = time.perf_counter()
    assert count_tasks(spec) == 100_000
    assert sum(1 for _ in iter_tasks(spec)) == 100_000
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"counting and expanding 100,000 tasks twice took {elapsed:.3f}s"
