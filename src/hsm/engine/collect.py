"""The bound on collecting a finished attempt's results: retried with backoff, then given
up with the cause ``collect_failed`` (the remote folder is kept and named)."""

from __future__ import annotations

import logging

from hsm.backoff import Backoff

log = logging.getLogger(__name__)

COLLECT_TRIES = 6  # about a minute in all: waits of 1, 2, 4, 8, 16 s


def collect_backoff() -> Backoff:
    return Backoff(tries=COLLECT_TRIES, first=1.0, cap=30.0)


def give_up_collecting(
    backoff: Backoff, number: int, source: str, remote_dir: str, exc: BaseException
) -> bool:
    """Record a failed collection; True (and an error logged) when the bound is reached."""
    if backoff.failed():
        log.error(
            "could not collect task %d from %s after %d tries: %s; its results stay "
            "in %s on %s (collect_failed)",
            number,
            source,
            backoff.failures,
            exc,
            remote_dir,
            source,
        )
        return True
    log.warning(
        "could not collect task %d from %s: %s; retrying in %.0f s (try %d of %d)",
        number,
        source,
        exc,
        backoff.delay(),
        backoff.failures + 1,
        backoff.tries,
    )
    return False
