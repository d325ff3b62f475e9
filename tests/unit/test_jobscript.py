"""The wrapper's file contract on the Python side: status parsing, events, spec validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from hsm.jobscript import (
    EVENTS_FILE,
    STATUS_FILE,
    STATUS_SIZE,
    STATUS_SPARE,
    TERMINAL,
    WRAPPER_PATH,
    GuardSettings,
    TaskSpec,
    WrapperState,
    WrapperStatus,
    encode_spec,
    parse_events,
    parse_status,
    read_events,
    read_status,
    wrapper_name,
    wrapper_text,
    write_spec,
)
from hsm.states import Cause

FINAL: dict[str, Any] = {
    "version": 1,
    "attempt": 2,
    "status": "failed",
    "cause": "task_failed",
    "exit_code": 3,
    "pid": 4242,
    "pgid": 4243,
    "host": "blossom",
    "started": 1767225600.12,
    "finished": 1767225610.5,
}
RUNNING: dict[str, Any] = {
    **FINAL,
    "status": "running",
    "cause": None,
    "exit_code": None,
    "pgid": None,
    "finished": None,
}


def test_parse_final_status() -> None:
    status = parse_status(json.dumps(FINAL))
    assert status == WrapperStatus(
        version=1,
        attempt=2,
        status=WrapperState.FAILED,
        cause=Cause.TASK_FAILED,
        exit_code=3,
        pid=4242,
        pgid=4243,
        host="blossom",
        started=1767225600.12,
        finished=1767225610.5,
    )
    assert status.terminal


def test_parse_running_status_with_nulls() -> None:
    status = parse_status(json.dumps(RUNNING))
    assert status is not None
    assert status.status is WrapperState.RUNNING
    assert status.cause is None and status.exit_code is None and status.pgid is None
    assert status.finished is None
    assert not status.terminal


def test_parse_padded_status_as_the_wrapper_writes_it() -> None:
    body = json.dumps(FINAL)
    text = body + " " * (STATUS_SIZE - 1 - len(body)) + "\n"
    assert parse_status(text) == parse_status(body)


def test_integer_times_are_accepted() -> None:
    status = parse_status(json.dumps({**FINAL, "started": 1767225600, "finished": 1767225601}))
    assert status is not None and status.started == 1767225600.0


@pytest.mark.parametrize("state", list(WrapperState))
def test_every_state_parses(state: WrapperState) -> None:
    status = parse_status(json.dumps({**FINAL, "status": state.value}))
    assert status is not None and status.status is state
    assert status.terminal == (state in TERMINAL)


@pytest.mark.parametrize("cause", list(Cause))
def test_every_cause_parses(cause: Cause) -> None:
    status = parse_status(json.dumps({**FINAL, "cause": cause.value}))
    assert status is not None and status.cause is cause


def test_enums_are_lowercase_strings() -> None:
    assert {s.value for s in WrapperState} == {"running", "completed", "failed", "cancelled"}
    wrapper_causes = {
        "completed",
        "task_failed",
        "disk_precheck",
        "disk_kill",
        "cancelled",
        "signal",
    }
    assert wrapper_causes <= {c.value for c in Cause}
    assert all(c.value == c.value.lower() for c in Cause)
    assert isinstance(WrapperState.COMPLETED, str)
    assert WrapperState.COMPLETED.value == "completed"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        " " * (STATUS_SIZE - 1) + "\n",
        "\0" * 64,
        "{",
        "null",
        "[]",
        "42",
        '"running"',
        "{}",
        "not json at all",
        "{'single': 'quotes'}",
    ],
)
def test_empty_or_invalid_text_is_none(text: str) -> None:
    assert parse_status(text) is None


@pytest.mark.parametrize("cut", range(1, len(json.dumps(FINAL)) - 1))
def test_every_truncation_is_none(cut: int) -> None:
    assert parse_status(json.dumps(FINAL)[:cut]) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("status", "RUNNING"),
        ("status", "pending"),
        ("status", None),
        ("cause", "oom"),
        ("cause", 1),
        ("version", "1"),
        ("version", None),
        ("attempt", 1.5),
        ("attempt", True),
        ("exit_code", "3"),
        ("exit_code", 3.0),
        ("exit_code", False),
        ("pid", None),
        ("pid", "4242"),
        ("pgid", "x"),
        ("host", None),
        ("host", 7),
        ("started", None),
        ("started", "yesterday"),
        ("started", True),
        ("finished", "later"),
    ],
)
def test_wrong_types_are_none(key: str, value: Any) -> None:
    assert parse_status(json.dumps({**FINAL, key: value})) is None


@pytest.mark.parametrize("key", sorted(FINAL))
def test_missing_keys_are_none(key: str) -> None:
    data = {k: v for k, v in FINAL.items() if k != key}
    assert parse_status(json.dumps(data)) is None


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_times_are_none(number: str) -> None:
    text = json.dumps(FINAL).replace("1767225600.12", number)
    assert parse_status(text) is None


def test_deeply_nested_json_is_none() -> None:
    assert parse_status("[" * 100_000 + "]" * 100_000) is None


def test_extra_keys_are_ignored() -> None:
    assert parse_status(json.dumps({**FINAL, "new_field": [1, 2]})) == parse_status(
        json.dumps(FINAL)
    )


def test_read_status(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text(json.dumps(FINAL))
    status = read_status(tmp_path)
    assert status is not None and status.exit_code == 3
    (tmp_path / STATUS_FILE).write_bytes(b"\xff\xfe{")
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text("")
    assert read_status(tmp_path) is None
    assert read_status(tmp_path / "missing") is None


def test_read_events(tmp_path: Path) -> None:
    assert read_events(tmp_path) == []
    (tmp_path / EVENTS_FILE).parent.mkdir()
    (tmp_path / EVENTS_FILE).write_text(
        "WARNING: Low disk space detected: 0.4GB remaining\n\nsecond\n"
    )
    assert read_events(tmp_path) == ["WARNING: Low disk space detected: 0.4GB remaining", "second"]


def test_wrapper_is_shipped() -> None:
    assert WRAPPER_PATH.is_file()
    text = wrapper_text()
    assert text == WRAPPER_PATH.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")


def test_the_wrapper_file_name_names_the_version_installed() -> None:
    """Hosts and sweep folders keep the wrapper as a copy of WRAPPER_PATH, named by its hash."""
    digest = hashlib.sha256(WRAPPER_PATH.read_bytes()).hexdigest()[:12]
    assert wrapper_name() == f"wrapper-{digest}.sh"


GUARD = GuardSettings(
    project_min_free=2, task_min_free=1, check_interval=300, warn_below=0, kill_below=0
)


def spec(**changes: Any) -> TaskSpec:
    base: dict[str, Any] = {
        "attempt": 1,
        "project_dir": "/p",
        "guard": GUARD,
        "env": {"A": "1"},
        "setup": [],
        "argv": ["true"],
        "info": "",
    }
    return TaskSpec(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"project_dir": "/p\0x"}, "project_dir"),
        ({"env": {"KEY": "a\0b"}}, "env['KEY']"),
        ({"setup": ["ok", "bad\0"]}, "setup[1]"),
        ({"argv": ["python", "x\0y"]}, "argv[1]"),
        ({"info": "a\0"}, "info"),
    ],
)
def test_nul_bytes_are_rejected_by_field(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match="NUL") as error:
        encode_spec(spec(**changes))
    assert named in str(error.value)


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A=B", "A B", "a[0]", "É"])
def test_invalid_env_keys_are_rejected(key: str) -> None:
    with pytest.raises(ValueError, match="env key"):
        encode_spec(spec(env={key: "v"}))


@pytest.mark.parametrize(
    "changes",
    [
        {"attempt": -1},
        {"attempt": True},
        {"guard": GuardSettings(-1, 1, 1, 1, 1)},
        {"guard": GuardSettings(1, 1, 1.5, 1, 1)},  # type: ignore[arg-type]  # deliberately wrong
        {"argv": []},
    ],
)
def test_bad_numbers_and_empty_argv_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_spec(spec(**changes))


@pytest.mark.parametrize("nonce", ["A1", "g", "0" * 33, " 1", "1\n", 7])
def test_bad_nonces_are_rejected(nonce: Any) -> None:
    with pytest.raises(ValueError, match="nonce"):
        encode_spec(spec(nonce=nonce))


def test_nonce_follows_the_attempt() -> None:
    data = encode_spec(spec(attempt=3, nonce="9f" * 16))
    assert data.split(b"\0")[:5] == [b"hsm-spec-3", b"3", b"9f" * 16, b"", b"/p"]
    data = encode_spec(spec(attempt=3, nonce="ab", signal="USR1"))
    assert data.split(b"\0")[:5] == [b"hsm-spec-3", b"3", b"ab", b"USR1", b"/p"]
    with pytest.raises(ValueError, match="signal"):
        encode_spec(spec(signal="TERM"))
    assert encode_spec(spec()).split(b"\0")[2] == b""


def test_status_nonce_is_read_and_checked() -> None:
    data = {**FINAL, "version": 2, "nonce": "ab12"}
    status = parse_status(json.dumps(data))
    assert status is not None and status.nonce == "ab12"
    assert parse_status(json.dumps({**data, "nonce": "XY"})) is None
    assert parse_status(json.dumps({**data, "nonce": 5})) is None
    old = parse_status(json.dumps(FINAL))  # a version 1 status has no nonce
    assert old is not None and old.nonce == ""


def test_non_utf8_arguments_round_trip() -> None:
    raw = b"caf\xe9"
    data = encode_spec(spec(argv=["echo", raw.decode("utf-8", "surrogateescape")]))
    assert b"\0echo\0caf\xe9\0" in data


def test_write_spec(tmp_path: Path) -> None:
    task = tmp_path / "task"
    write_spec(task, spec())
    assert (task / ".hsm" / "spec").read_bytes() == encode_spec(spec())
    assert (task / STATUS_SPARE).read_bytes() == b" " * (STATUS_SIZE - 1) + b"\n"
    assert (task / "tmp").is_dir() and (task / "cuda_cache").is_dir()
    assert not (task / ".hsm" / "spec.tmp").exists()
    write_spec(task, spec(attempt=2))  # a retry replaces the spec
    assert (task / ".hsm" / "spec").read_bytes() == encode_spec(spec(attempt=2))


def test_events_are_read_per_attempt() -> None:
    text = (
        "# hsm events, one per line\n# attempt 1\nWARNING: one\n"
        "# attempt 2\nWARNING: two\nCRITICAL: two\n"
    )
    assert parse_events(text) == ["WARNING: one", "WARNING: two", "CRITICAL: two"]
    assert parse_events(text, 1) == ["WARNING: one"]
    assert parse_events(text, 2) == ["WARNING: two", "CRITICAL: two"]
    assert parse_events(text, 3) == []
    # A log without attempt lines belongs to whichever attempt asks.
    assert parse_events("# hsm events, one per line\nWARNING: x\n", 2) == ["WARNING: x"]
