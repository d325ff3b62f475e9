"""What ``hsm resume`` may change in a stored sweep: the failures to rerun and the resources."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from hsm.errors import ConfigError
from hsm.spec.sweep import Resources
from hsm.states import Cause

# The causes a failed task can have (``completed`` and ``cancelled`` are not failures).
FAILURE_CAUSES = tuple(c.value for c in Cause if c not in (Cause.COMPLETED, Cause.CANCELLED))

# The resources a resume may change, by the option that changes them.
RESOURCE_OPTIONS = {"walltime": "--walltime", "mem": "--mem", "cpus": "--cpus", "gpus": "--gpus"}


def parse_causes(values: Sequence[str]) -> list[str] | None:
    """``--cause timeout,disk_kill`` (repeatable) as a list of causes; None when not given."""
    if not values:
        return None
    causes: list[str] = []
    for value in values:
        for part in value.split(","):
            cause = part.strip()
            if cause not in FAILURE_CAUSES:
                near = difflib.get_close_matches(cause, FAILURE_CAUSES, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(
                    f"--cause: {cause!r} is not a failure cause{hint}; the causes"
                    f" are: {', '.join(FAILURE_CAUSES)}"
                )
            if cause not in causes:
                causes.append(cause)
    return causes


def check_resources(base: Resources, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The resource changes of a resume, checked against the sweep's own resources. Returns
    them in the form they are stored; a bad value names its option."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None:
            continue
        option = RESOURCE_OPTIONS[key]
        try:
            checked = Resources.model_validate({**base.model_dump(exclude_none=True), key: value})
        except ValidationError as exc:
            why = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ConfigError(f"{option}: {value!r} is not valid: {why}") from None
        out[key] = getattr(checked, key)
    return out


def apply_resources(raw: Mapping[str, Any], changes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sweep's data with each recorded resource change applied in turn."""
    resources = dict(raw.get("resources") or {})
    for change in changes:
        resources.update(change)
    data = dict(raw)
    if resources:
        data["resources"] = resources
    return data


def describe_resources(resources: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in resources.items())
