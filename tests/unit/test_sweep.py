"""The sweep spec: loading, flattening, checks, YAML reading, and clear error messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hsm.errors import ConfigError, ExitCode
from hsm.spec.expand import count_tasks, iter_tasks
from hsm.spec.sweep import SweepSpec, load_sweep, mem_megabytes, sweep_from_data, walltime_seconds


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("", encoding="utf-8")
    return tmp_path


def write(project: Path, text: str) -> Path:
    path = project / "sweep.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(project: Path, text: str) -> SweepSpec:
    return load_sweep(write(project, text), project)


def assert_clean_message(message: str, *parts: str) -> None:
    """One line, no traceback, no pydantic dump, and naming every part."""
    assert "\n" not in message
    assert "Traceback" not in message
    assert "pydantic" not in message
    assert "https://" not in message
    assert "validation error" not in message
    for part in parts:
        assert part in message, (part, message)


def error_for(project: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(project, text)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    return info.value.message


# --- valid specs ------------------------------------------------------------------


def test_design_example(project: Path) -> None:
    s = load(
        project,
        """
        script: train.py
        sweep:
          grid:
            seed: [1, 2, 3]
            optimizer: {lr: [0.001, 0.01]}
          paired:
            - {model.name: [small, large], model.width: [128, 1024]}
        defaults: {batch_size: 32}
        resources: {gpus: 1, cpus: 4, mem: 16G, walltime: "04:00:00"}
        max_runs: 100
        """,
    )
    assert s.script == "train.py" and s.command is None
    assert s.grid == {"seed": [1, 2, 3], "optimizer.lr": [0.001, 0.01]}
    assert s.paired == [{"model.name": ["small", "large"], "model.width": [128, 1024]}]
    assert s.defaults == {"batch_size": 32}
    assert s.resources.gpus == 1 and s.resources.cpus == 4
    assert s.resources.mem == "16G" and s.resources.mem_megabytes == 16 * 1024
    assert s.resources.walltime_seconds == 4 * 3600
    assert s.max_runs == 100
    assert s.output_dir_arg is None and s.wandb_group_arg is None
    assert s.hydra_append is False and s.hydra is False
    assert s.path == project / "sweep.yaml"
    assert count_tasks(s) == 12
    assert next(iter_tasks(s)) == {
        "seed": 1,
        "optimizer.lr": 0.001,
        "model.name": "small",
        "model.width": 128,
        "batch_size": 32,
    }


def test_command_as_list_or_string(project: Path) -> None:
    s = load(project, "command: [python, -m, pkg.train]\nsweep: {grid: {a: [1]}}\n")
    assert s.command == ("python", "-m", "pkg.train") and s.script is None
    s = load(project, "command: python -m 'pkg.train' --flag\nsweep: {grid: {a: [1]}}\n")
    assert s.command == ("python", "-m", "pkg.train", "--flag")


def test_nested_maps_flatten_to_dotted_keys(project: Path) -> None:
    s = load(
        project,
        """
        script: train.py
        sweep:
          grid:
            model: {encoder: {layers: [2, 4]}, dropout: [0.1]}
          paired:
            - optimizer: {name: [adam, sgd], lr: [0.001, 0.1]}
        defaults:
          data: {path: /data, workers: 4}
          empty: {}
        """,
    )
    assert list(s.grid) == ["model.encoder.layers", "model.dropout"]
    assert s.paired == [{"optimizer.name": ["adam", "sgd"], "optimizer.lr": [0.001, 0.1]}]
    assert s.defaults == {"data.path": "/data", "data.workers": 4, "empty": {}}


def test_a_list_as_a_single_point_is_a_list_of_lists(project: Path) -> None:
    s = load(project, "script: train.py\nsweep: {grid: {layers: [[64, 64], [128]]}}\n")
    assert list(iter_tasks(s)) == [{"layers": [64, 64]}, {"layers": [128]}]


def test_arguments_can_be_renamed_or_switched_off(project: Path) -> None:
    s = load(
        project,
        "script: train.py\nsweep: {grid: {a: [1]}}\n"
        "output_dir_arg: ++paths.out\nwandb_group_arg: null\nhydra_append: true\n",
    )
    assert s.output_dir_arg == "++paths.out" and s.wandb_group_arg is None and s.hydra_append


HYDRA_APP = """import hydra

@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg):
    pass
"""


def test_a_hydra_app_is_recognised_by_its_decorator(project: Path) -> None:
    (project / "train.py").write_text(HYDRA_APP, encoding="utf-8")
    s = load(project, "script: train.py\nsweep: {grid: {a: [1]}}\n")
    assert s.hydra and s.raw["hydra"] is True
    # The decision is kept with the stored copy: a resume gives the same arguments.
    assert sweep_from_data(s.raw, project / "sweep.yaml", None).hydra
    (project / "pkg").mkdir()
    (project / "pkg" / "run.py").write_text(HYDRA_APP, encoding="utf-8")
    s = load(project, "command: [python3, pkg/run.py]\nsweep: {grid: {a: [1]}}\n")
    assert s.hydra


def test_a_plain_script_is_no_hydra_app_and_the_key_decides(project: Path) -> None:
    (project / "train.py").write_text(
        "# mentions @hydra.main in a comment only\nimport sys\n", encoding="utf-8"
    )
    s = load(project, "script: train.py\nsweep: {grid: {a: [1]}}\n")
    assert not s.hydra and s.raw["hydra"] is False
    assert load(project, "script: train.py\nhydra: true\nsweep: {grid: {a: [1]}}\n").hydra
    assert not load(project, "command: [python3, -m, pkg]\nsweep: {grid: {a: [1]}}\n").hydra
    (project / "train.py").write_text(HYDRA_APP, encoding="utf-8")
    s = load(project, "script: train.py\nhydra: false\nsweep: {grid: {a: [1]}}\n")
    assert not s.hydra and "hydra" in s.raw


def test_hydra_prefixes_are_kept_in_keys(project: Path) -> None:
    s = load(project, "script: train.py\nsweep: {grid: {+new.key: [1], ++maybe: [2]}}\n")
    assert list(s.grid) == ["+new.key", "++maybe"]


def test_yaml_values_read_as_a_hydra_user_expects(project: Path) -> None:
    s = load(
        project,
        """
        script: train.py
        sweep:
          grid:
            lr: [1e-4, 1E-3, 3.0e-5, .5, 1_000, 0x10]
            strings: [04:00:00, 2024-01-01, "1e-4", 017, "yes", '']
            bools: [true, false, yes, no, null, ~]
        defaults:
          on: 1
        """,
    )
    assert s.grid["lr"] == [0.0001, 0.001, 3e-05, 0.5, 1000, 16]
    assert all(isinstance(v, float) for v in s.grid["lr"][:4])
    assert s.grid["strings"] == ["04:00:00", "2024-01-01", "1e-4", "017", "yes", ""]
    assert s.grid["bools"] == [True, False, True, False, None, None]
    assert s.defaults == {"on": 1}


def test_yaml_anchors_and_merges_work(project: Path) -> None:
    s = load(
        project,
        """
        script: train.py
        sweep:
          grid: {seed: &seeds [1, 2]}
          paired:
            - {other_seed: *seeds}
        defaults:
          <<: {lr: 0.1, wd: 0.0}
          wd: 0.5
        """,
    )
    assert s.paired == [{"other_seed": [1, 2]}]
    assert s.defaults == {"lr": 0.1, "wd": 0.5}


def test_walltime_and_mem_forms() -> None:
    assert walltime_seconds("04:00:00") == 4 * 3600
    assert walltime_seconds("1-02:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4
    assert walltime_seconds("90") == 90 * 60
    assert walltime_seconds("48:00:00") == 48 * 3600
    for bad in ("4h", "1:2:3", "00:60:00", "1-24:00:00", "0", "00:00:00", "", "-5"):
        with pytest.raises(ValueError):
            walltime_seconds(bad)
    assert mem_megabytes("16G") == 16 * 1024
    assert mem_megabytes("16GB") == 16 * 1024
    assert mem_megabytes("500M") == 500
    assert mem_megabytes("1.5g") == 1536
    assert mem_megabytes("16000") == 16000
    assert mem_megabytes("512K") == 1
    for bad in ("lots", "16Q", "", "-1G", "0"):
        with pytest.raises(ValueError):
            mem_megabytes(bad)


def test_walltime_in_minutes_as_a_number(project: Path) -> None:
    s = load(project, "script: train.py\nsweep: {grid: {a: [1]}}\nresources: {walltime: 90}\n")
    assert s.resources.walltime == "90" and s.resources.walltime_seconds == 5400


def test_sweep_from_data_skips_the_script_check() -> None:
    s = sweep_from_data(
        {"script": "gone.py", "sweep": {"grid": {"a": [1, 2]}}}, Path("stored.yaml"), None
    )
    assert s.raw == {"script": "gone.py", "sweep": {"grid": {"a": [1, 2]}}}
    assert count_tasks(s) == 2


def test_script_may_be_absolute(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("other") / "run.py"
    elsewhere.write_text("", encoding="utf-8")
    s = load(project, f"script: {elsewhere}\nsweep: {{grid: {{a: [1]}}}}\n")
    assert s.script == str(elsewhere)


# --- error messages ---------------------------------------------------------------


def test_empty_file(project: Path) -> None:
    assert_clean_message(error_for(project, ""), "sweep.yaml", "empty")
    assert_clean_message(error_for(project, "# only a comment\n"), "sweep.yaml", "empty")


def test_malformed_yaml(project: Path) -> None:
    message = error_for(project, "script: train.py\nsweep:\n  grid: {seed: [1, 2}\n")
    assert_clean_message(message, "sweep.yaml", "invalid YAML", "line 3")


def test_tab_indentation(project: Path) -> None:
    message = error_for(project, "script: train.py\nsweep:\n\tgrid: {}\n")
    assert_clean_message(message, "sweep.yaml", "invalid YAML", "line 3")


def test_top_level_list(project: Path) -> None:
    assert_clean_message(error_for(project, "- script\n"), "sweep.yaml", "mapping", "line 1")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "scrpit: train.py\nsweep: {grid: {a: [1]}}\n",
            ["unknown key 'scrpit'", "did you mean 'script'?", "line 1"],
        ),
        (
            "script: train.py\nsweep:\n  grd:\n    a: [1]\n",
            ["unknown key 'sweep.grd'", "did you mean 'grid'?", "line 3"],
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nresources:\n  gpu: 1\n",
            ["unknown key 'resources.gpu'", "did you mean 'gpus'?", "line 4"],
        ),
        (
            "script: train.py\ngrid: {a: [1]}\nsweep: {grid: {a: [1]}}\n",
            ["unknown key 'grid'", "did you mean 'sweep.grid'?", "line 2"],
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nmaxruns: 3\n",
            ["unknown key 'maxruns'", "did you mean 'max_runs'?", "line 3"],
        ),
    ],
)
def test_unknown_keys(project: Path, text: str, parts: list[str]) -> None:
    assert_clean_message(error_for(project, text), "sweep.yaml", *parts)


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        (
            "script: train.py\nsweep:\n  grid:\n    seed: 1\n",
            "sweep.grid.seed",
            4,
            "expected a list of values",
        ),
        ("script: train.py\nsweep:\n  grid:\n    seed: []\n", "sweep.grid.seed", 4, "empty list"),
        ("script: train.py\nsweep:\n  grid:\n    opt: {}\n", "sweep.grid.opt", 4, "empty mapping"),
        ("script: train.py\nsweep:\n  grid: {}\n", "sweep", 2, "the sweep has no parameters"),
        (
            "script: train.py\nsweep:\n  grid: {}\n  paired: []\ndefaults: {a: 1}\n",
            "sweep",
            2,
            "the sweep has no parameters",
        ),
        (
            "script: train.py\nsweep:\n  paired:\n    - {a: [1, 2], b: [1, 2, 3]}\n",
            "sweep.paired[0]",
            4,
            "a has 2, b has 3",
        ),
        (
            "script: train.py\nsweep:\n  grid: {x: [1]}\n  paired:\n    - {a: [1]}\n"
            "    - {b: [1, 2], c: [1]}\n",
            "sweep.paired[1]",
            6,
            "paired group 1 must have equal lengths",
        ),
        (
            "script: train.py\nsweep:\n  paired:\n    - {}\n",
            "sweep.paired[0]",
            4,
            "at least one list",
        ),
        ("script: train.py\nsweep:\n  paired: {a: [1]}\n", "sweep.paired", 3, "expected a list"),
        ("script: missing.py\nsweep: {grid: {a: [1]}}\n", "script", 1, "missing.py"),
        (
            "script: train.py\ncommand: [python]\nsweep: {grid: {a: [1]}}\n",
            "command",
            2,
            "not both",
        ),
        ("command: []\nsweep: {grid: {a: [1]}}\n", "command", 1, "must not be empty"),
        (
            "command: python 'unclosed\nsweep: {grid: {a: [1]}}\n",
            "command",
            1,
            "No closing quotation",
        ),
        ("command: [python, 3]\nsweep: {grid: {a: [1]}}\n", "command[1]", 1, "expected a string"),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nresources:\n  walltime: 4h\n",
            "resources.walltime",
            4,
            "HH:MM:SS",
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nresources:\n  walltime: '1:2:3'\n",
            "resources.walltime",
            4,
            "HH:MM:SS",
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nresources:\n  mem: lots\n",
            "resources.mem",
            4,
            "expected memory",
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nresources:\n  gpus: -1\n",
            "resources.gpus",
            4,
            "at least 0",
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nresources:\n  cpus: 0\n",
            "resources.cpus",
            4,
            "at least 1",
        ),
        ("script: train.py\nsweep: {grid: {a: [1]}}\nmax_runs: 0\n", "max_runs", 3, "at least 1"),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nmax_runs: lots\n",
            "max_runs",
            3,
            "expected an integer",
        ),
        (
            "script: train.py\nsweep:\n  grid:\n    'bad key': [1]\n",
            "sweep.grid.bad key",
            4,
            "not a valid Hydra override key",
        ),
        ("script: train.py\nsweep:\n  grid:\n    ~a: [1]\n", "sweep.grid.~a", 4, "deletion"),
        (
            "script: train.py\nsweep:\n  grid:\n    a.b: [1]\n    a: {b: [2]}\n",
            "sweep.grid.a.b",
            5,
            "swept twice (also set at line 4)",
        ),
        (
            "script: train.py\nsweep:\n  grid:\n    a: [1]\n  paired:\n    - {+a: [2]}\n",
            "sweep.paired[0].+a",
            6,
            "swept twice",
        ),
        ("script: train.py\nsweep:\n  grid:\n    a: ['???']\n", "sweep.grid.a[0]", 4, "missing"),
        (
            "script: train.py\nsweep:\n  grid:\n    a: [!!binary aGk=]\n",
            "sweep.grid.a[0]",
            4,
            "unsupported YAML value",
        ),
        (
            "script: train.py\nsweep:\n  grid:\n    a: [{1.5: x}]\n",
            "sweep.grid.a[0]",
            4,
            "mapping key",
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\ndefaults:\n  x: 1\n  x: 2\n",
            "defaults.x",
            5,
            "duplicate key",
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\noutput_dir_arg: 'a b'\n",
            "output_dir_arg",
            3,
            "not a valid Hydra override key",
        ),
        (
            "script: train.py\nsweep: {grid: {a: [1]}}\nhydra_append: sure\n",
            "hydra_append",
            3,
            "expected true or false",
        ),
        ("script: [train.py]\nsweep: {grid: {a: [1]}}\n", "script", 1, "expected a string"),
        ("script: train.py\nsweep: [1, 2]\n", "sweep", 2, "expected a mapping"),
    ],
)
def test_bad_specs(project: Path, text: str, key: str, line: int, words: str) -> None:
    message = error_for(project, text)
    assert_clean_message(message, "sweep.yaml", f"{key}: ", f"(line {line})", words)


def test_missing_script_names_the_path_looked_at(project: Path) -> None:
    message = error_for(project, "script: src/nope.py\nsweep: {grid: {a: [1]}}\n")
    assert_clean_message(message, "sweep.yaml", "script: ", str(project / "src" / "nope.py"))


def test_neither_script_nor_command(project: Path) -> None:
    message = error_for(project, "sweep: {grid: {a: [1]}}\n")
    assert_clean_message(message, "sweep.yaml", "'script'", "'command'")


def test_missing_sweep_file(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_sweep(project / "nope.yaml", project)
    assert_clean_message(info.value.message, "nope.yaml", "not found")


@pytest.mark.parametrize(
    ("text", "name", "seconds"), [("USR1@90", "USR1", 90), ("SIGUSR2@300", "USR2", 300)]
)
def test_a_checkpoint_signal(text: str, name: str, seconds: int) -> None:
    s = sweep_from_data(
        {"command": ["true"], "sweep": {"grid": {"a": [1]}}, "resources": {"signal": text}},
        Path("sweep.yaml"),
        None,
    )
    assert (s.resources.signal_name, s.resources.signal_seconds) == (name, seconds)


@pytest.mark.parametrize("text", ["TERM@90", "USR1", "USR1@0", "USR1@-5", "KILL@10"])
def test_a_bad_checkpoint_signal_names_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"resources\.signal"):
        sweep_from_data(
            {"command": ["true"], "sweep": {"grid": {"a": [1]}}, "resources": {"signal": text}},
            Path("sweep.yaml"),
            None,
        )
