"""The one rule for a root folder as configured ("~", "~/x", "/x", "x"), in Python and in
the bash that the host-side programs share: both give the same folder."""

from __future__ import annotations

import os
import subprocess

import pytest

from hsm.sources.hostpath import expand_root
from hsm.sources.remote import script

HOME = "/home/it's me"
CASES = [
    ("~", HOME),
    ("~/", HOME),
    ("~/hsm", f"{HOME}/hsm"),
    ("~/hsm/", f"{HOME}/hsm"),
    ("~/a b/$(x)", f"{HOME}/a b/$(x)"),
    ("/srv/hsm", "/srv/hsm"),
    ("/srv/hsm//", "/srv/hsm"),
    ("/", "/"),
    ("//", "/"),
    ("hsm", f"{HOME}/hsm"),
    ("scratch/hsm/", f"{HOME}/scratch/hsm"),
    ("~user/hsm", f"{HOME}/~user/hsm"),  # only "~" and "~/" mean the home folder
    ("x~", f"{HOME}/x~"),
]


@pytest.mark.parametrize(("configured", "absolute"), CASES)
def test_python_rule(configured: str, absolute: str) -> None:
    assert expand_root(configured, HOME) == absolute


@pytest.mark.parametrize(("configured", "absolute"), CASES)
def test_bash_rule_is_the_same(configured: str, absolute: str) -> None:
    out = subprocess.run(
        ["bash", "-c", script("lib/expand_root.sh") + 'printf %s "$r"', "hsm-test", configured],
        capture_output=True,
        check=True,
        env={**os.environ, "HOME": HOME},
    ).stdout
    assert out.decode() == absolute
