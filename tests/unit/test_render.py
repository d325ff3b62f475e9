"""Rendering of parameters in Hydra's override grammar, checked with Hydra's own parser."""

from __future__ import annotations

import datetime
import random
from pathlib import Path
from typing import Any

import pytest

from hsm.spec.render import hydra_override, hydra_value, key_problem, quote, task_argv
from hsm.spec.sweep import SweepSpec

hydra_parser = pytest.importorskip("hydra.core.override_parser.overrides_parser")
omegaconf = pytest.importorskip("omegaconf")

PARSER = hydra_parser.OverridesParser.create()


def hydra_reads(override: str) -> Any:
    """What a Hydra app sees for ``override``: Hydra's parse, then OmegaConf's resolution."""
    parsed = PARSER.parse_override(override)
    value = parsed.value()
    cfg = omegaconf.OmegaConf.create({"k": value})
    return omegaconf.OmegaConf.to_container(cfg, resolve=True)["k"]


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


HOSTILE_STRINGS = [
    "adam",
    "data/train.csv",
    "a b",
    " leading and trailing ",
    "it's",
    'say "hi"',
    "both ' and \"",
    "a,b",
    "[1, 2]",
    "{a: 1}",
    "x=y",
    "$HOME",
    "$(rm -rf /)",
    "`whoami`",
    "a; b",
    "a:b",
    "(x)",
    "${oc.env:HOME}",
    "${x}",
    "\\${x}",
    "a\\",
    "a\\\\",
    "\\'",
    "back\\slash",
    "trailing quote'",
    "'",
    '"',
    "\\",
    "tab\there",
    "new\nline",
    "héllo wörld",
    "日本語",
    "emoji 🎉",
    "",
    " ",
    "1",
    "-1",
    "+1",
    "1.5",
    "1e-4",
    "1_000",
    "0x10",
    "01",
    ".5",
    "1.",
    "true",
    "True",
    "false",
    "null",
    "NULL",
    "nan",
    "inf",
    "-inf",
    "~",
    "#comment",
    "a#b",
    "!",
    "&*",
    "%d",
    "?",
    "@",
    "|",
    "-",
    "--flag",
    "++",
    "a=b=c",
    "key=",
]


@pytest.mark.parametrize("text", HOSTILE_STRINGS)
def test_strings_come_back_exactly(text: str) -> None:
    override = hydra_override("k", text)
    assert override.startswith("k=")
    got = hydra_reads(override)
    assert same(got, text), (override, got)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -5,
        123456789012345678901234567890,
        1e-4,
        1.0,
        -0.0,
        2.5,
        1e16,
        1e-300,
        float("inf"),
        float("-inf"),
        True,
        False,
        None,
        [],
        [1, 2, 3],
        ["a b", "1", "it's", None, 1e-4, True],
        [[1, 2], [3, [4, "x,y"]]],
        {},
        {"a": 1, "b": "x y", "c": [1, 2], "d": {"e": None}},
        {"a b": 1, "c:d": 2, "e,f": 3, "g=h": 4, "(i)": 5, "[j]": 6, "{k}": 7, "x\\y": 8},
        [{"name": "small", "width": 128}, {"name": "large", "width": 1024}],
    ],
)
def test_values_come_back_exactly(value: Any) -> None:
    override = hydra_override("k", value)
    got = hydra_reads(override)
    assert same(got, value), (override, got)


def test_nan_comes_back_as_nan() -> None:
    got = hydra_reads(hydra_override("k", float("nan")))
    assert isinstance(got, float) and got != got


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("adam", "adam"),
        ("data/train.csv", "data/train.csv"),
        ("resnet-50", "resnet-50"),
        ("a b", "'a b'"),
        ("1", "'1'"),
        ("true", "'true'"),
        ("null", "'null'"),
        ("", "''"),
        ("it's", '"it\'s"'),
        ("both ' and \"", "'both \\' and \"'"),
        ("a\\", "'a\\\\'"),
        ("a\\b", "'a\\b'"),
        ("${x}", "'\\${x}'"),
        ("é", "'é'"),
        (1, "1"),
        (1e-4, "0.0001"),
        (1.0, "1.0"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ([1, "a b", [2]], "[1,'a b',[2]]"),
        ({"a": 1, "b c": "x"}, "{a:1,b\\ c:x}"),
    ],
)
def test_exact_rendering(value: Any, expected: str) -> None:
    assert hydra_value(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", "'abc'"),
        ("a'b", '"a\'b"'),
        ("a'b\"c", "'a\\'b\"c'"),
        ("a\\'b\"", "'a\\\\\\'b\"'"),
        ("end\\\\", "'end\\\\\\\\'"),
        ("mid\\\\dle", "'mid\\\\dle'"),
    ],
)
def test_quote_escaping(text: str, expected: str) -> None:
    quoted = quote(text)
    assert quoted == expected
    assert hydra_reads("k=" + quoted) == text


def test_random_strings_round_trip() -> None:
    alphabet = list("ab01 '\"\\,[]{}()=$:;`#!~^&*?|%@+-._/\t\né€") + ["${", "e", "true", "null"]
    rnd = random.Random(20240101)
    for _ in range(1500):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 8)))
        if text == "???":
            continue
        override = hydra_override("k", text)
        assert hydra_reads(override) == text, override


@pytest.mark.parametrize(
    "value",
    [
        b"bytes",
        datetime.date(2024, 1, 1),
        {1, 2},
        "???",
        "nul\x00",
        {"1.5": 1},
        {"true": 1},
        {"é": 1},
    ],
)
def test_unrepresentable_values_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        hydra_value(value)


@pytest.mark.parametrize(
    "key",
    [
        "seed",
        "optimizer.lr",
        "layers.0.width",
        "+new.key",
        "++maybe.new",
        "hydra/launcher",
        "db@backup",
        "$special",
        "a-b_c",
        "output.dir",
    ],
)
def test_valid_keys_parse(key: str) -> None:
    assert key_problem(key) is None
    parsed = PARSER.parse_override(hydra_override(key, 1))
    assert parsed.value() == 1


@pytest.mark.parametrize("key", ["", "a b", "a..b", ".a", "a.", "~a", "a=b", "é", "a,b", "+++a"])
def test_invalid_keys_are_refused(key: str) -> None:
    assert key_problem(key) is not None
    with pytest.raises(ValueError):
        hydra_override(key, 1)


def spec(**kwargs: Any) -> SweepSpec:
    base: dict[str, Any] = {"script": "train.py", "grid": {"seed": [1]}}
    base.update(kwargs)
    return SweepSpec(**base)


def test_task_argv_for_a_plain_script_is_its_parameters_alone() -> None:
    argv = task_argv(spec(), {"seed": 1, "name": "a b"}, python="py", task_dir="/t", sweep_id="s")
    assert argv == ["py", "train.py", "seed=1", "name='a b'"]


def test_task_argv_for_a_hydra_app_adds_its_run_dir_only() -> None:
    argv = task_argv(
        spec(hydra=True), {"optim": "sgd"}, python="py", task_dir="/runs/s 1/task_001", sweep_id="s"
    )
    assert argv == ["py", "train.py", "optim=sgd", "hydra.run.dir='/runs/s 1/task_001'"]
    # Not prefixed by hydra_append: every Hydra config has the key.
    argv = task_argv(
        spec(hydra=True, hydra_append=True), {"a": 1}, python="py", task_dir="/t", sweep_id="s"
    )
    assert argv[2:] == ["++a=1", "hydra.run.dir=/t"]
    assert task_argv(spec(hydra=True), {}, python="py", task_dir=None, sweep_id="s") == [
        "py",
        "train.py",
    ]


def test_task_argv_for_a_script_with_opt_in_arguments() -> None:
    argv = task_argv(
        spec(output_dir_arg="output.dir", wandb_group_arg="wandb.group"),
        {"seed": 1, "optimizer.lr": 1e-4, "name": "a b"},
        python="/usr/bin/python3",
        task_dir="/runs/s 1/task_001",
        sweep_id="sweep_1",
    )
    assert argv == [
        "/usr/bin/python3",
        "train.py",
        "seed=1",
        "optimizer.lr=0.0001",
        "name='a b'",
        "output.dir='/runs/s 1/task_001'",
        "wandb.group=sweep_1",
    ]


def test_task_argv_for_a_command() -> None:
    argv = task_argv(
        spec(script=None, command=("python", "-m", "pkg.train"), wandb_group_arg="wandb.group"),
        {"seed": 2},
        python="ignored",
        task_dir=None,
        sweep_id="s",
    )
    assert argv == ["python", "-m", "pkg.train", "seed=2", "wandb.group=s"]


def test_task_argv_arguments_can_be_switched_off_and_renamed() -> None:
    off = spec(output_dir_arg=None, wandb_group_arg=None)
    assert task_argv(off, {"seed": 1}, python="py", task_dir="/t", sweep_id="s") == [
        "py",
        "train.py",
        "seed=1",
    ]
    renamed = spec(output_dir_arg="paths.out", wandb_group_arg="+logger.group")
    assert task_argv(renamed, {}, python="py", task_dir="/t", sweep_id="s") == [
        "py",
        "train.py",
        "paths.out=/t",
        "+logger.group=s",
    ]


def test_task_argv_hydra_append_prefixes_every_key_once() -> None:
    argv = task_argv(
        spec(hydra_append=True, output_dir_arg="output.dir", wandb_group_arg="wandb.group"),
        {"seed": 1, "+new": 2, "++other": 3},
        python="py",
        task_dir="/t",
        sweep_id="s",
    )
    assert argv[2:] == ["++seed=1", "+new=2", "++other=3", "++output.dir=/t", "++wandb.group=s"]


def test_task_argv_elements_are_never_shell_split(tmp_path: Path) -> None:
    hostile = "a'; echo foo\nbar"
    argv = task_argv(
        spec(hydra=True), {"name": hostile}, python="py", task_dir=str(tmp_path), sweep_id="s"
    )
    assert len(argv) == 4
    assert hydra_reads(argv[2]) == hostile
