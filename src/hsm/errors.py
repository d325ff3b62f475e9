"""The error hierarchy. Each error carries the exit code the CLI uses (see docs/cli.md)."""

from __future__ import annotations


class ExitCode:
    OK = 0
    TASKS_FAILED = 1
    BAD_INPUT = 2
    ABORTED = 3
    INTERNAL = 70  # a bug in hsm (EX_SOFTWARE); the traceback goes to the debug log
    INTERRUPTED = 130


class HsmError(Exception):
    """Root of every error hsm raises on purpose. The CLI catches it in one place."""

    exit_code: int = ExitCode.BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(HsmError):
    """Bad input: config file, sweep spec, CLI usage. Exit 2, nothing written."""

    exit_code = ExitCode.BAD_INPUT


class UnknownSweepError(HsmError):
    exit_code = ExitCode.BAD_INPUT


class UnknownSourceError(HsmError):
    exit_code = ExitCode.BAD_INPUT


class SourceUnavailableError(HsmError):
    """A source cannot be used before the sweep starts (unreachable, auth, host key)."""

    exit_code = ExitCode.BAD_INPUT


class SubmissionError(HsmError):
    """A backend refused to start work (e.g. a scheduler rejected a job script)."""

    exit_code = ExitCode.BAD_INPUT


class StateError(HsmError):
    """The state database cannot be read or written (corrupt, disk full)."""

    exit_code = ExitCode.BAD_INPUT


class SweepAborted(HsmError):
    """No usable source is left, or the script fails everywhere. Exit 3."""

    exit_code = ExitCode.ABORTED
