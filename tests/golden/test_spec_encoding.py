"""The bytes of a task spec (`.hsm/spec`) for hostile values, compared with a golden file.

Set HSM_UPDATE_GOLDEN=1 to rewrite the golden file after a deliberate format change.
"""

from __future__ import annotations

import os
from pathlib import Path

from hsm.jobscript import SPEC_MAGIC, GuardSettings, TaskSpec, encode_spec

GOLDEN = Path(__file__).parent / "data" / "hostile_spec.bin"

HOSTILE = [
    "it's",
    'say "hi"',
    "$(touch /tmp/hsm-canary)",
    "`touch /tmp/hsm-canary`",
    "two\nlines",
    "  spaced  out  ",
    "ünïcödé ✓ 学习率",
    "",
    "back\\slash",
    "semi;colon && rm -rf ~ | cat",
    "*",
    "-n",
    "tab\there",
    "${HOME}",
    "lr=0.01,0.1",
]


def hostile_spec() -> TaskSpec:
    return TaskSpec(
        attempt=2,
        project_dir="/projects/my project/it's here",
        guard=GuardSettings(
            project_min_free=2_000_000_000,
            task_min_free=1_000_000_000,
            check_interval=300,
            warn_below=1_000_000_000,
            kill_below=200_000_000,
        ),
        env={
            "HSM_SWEEP_ID": "sweep_20240101_120000",
            "HSM_TASK_NUMBER": "7",
            "WANDB_RUN_GROUP": "$(touch /tmp/hsm-canary)",
            "WANDB_DIR": "/data/wandb dir/'quoted'",
            "EMPTY": "",
            "MULTI": "a\nb=c",
        },
        setup=["module load cuda/12", "source ~/venv/bin/activate"],
        argv=["python", "train.py", *(f"p{i}={v}" for i, v in enumerate(HOSTILE)), ""],
        info="Task: 7\nSweep: sweep_20240101_120000\nCommand: python train.py 'it'\"'\"'s'\n",
        nonce="0123456789abcdef0123456789abcdef",
        signal="USR2",
    )


def fields(data: bytes) -> list[bytes]:
    """The NUL-terminated fields of a spec, for a readable diff."""
    assert data.endswith(b"\0")
    return data[:-1].split(b"\0")


def test_hostile_spec_matches_golden() -> None:
    data = encode_spec(hostile_spec())
    if os.environ.get("HSM_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(data)
    golden = GOLDEN.read_bytes()
    assert fields(data) == fields(golden)
    assert data == golden


def test_golden_layout() -> None:
    spec = hostile_spec()
    f = fields(GOLDEN.read_bytes())
    assert f[0] == SPEC_MAGIC.encode()
    assert f[1:10] == [
        b"2",
        spec.nonce.encode(),
        b"USR2",
        spec.project_dir.encode(),
        b"2000000000",
        b"1000000000",
        b"300",
        b"1000000000",
        b"200000000",
    ]
    n_env = int(f[10])
    assert n_env == len(spec.env)
    assert f[11 : 11 + n_env] == [f"{k}={v}".encode() for k, v in spec.env.items()]
    i = 11 + n_env
    assert int(f[i]) == len(spec.setup)
    assert f[i + 1 : i + 1 + len(spec.setup)] == [s.encode() for s in spec.setup]
    i += 1 + len(spec.setup)
    assert int(f[i]) == len(spec.argv)
    assert f[i + 1 : i + 1 + len(spec.argv)] == [a.encode() for a in spec.argv]
    i += 1 + len(spec.argv)
    assert f[i:] == [spec.info.encode()]
