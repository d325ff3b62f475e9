"""The queue source against a scripted login side: what it submits, what it concludes from
the scheduler's answers, and what it does when the scheduler misbehaves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from hsm import clock
from hsm.engine.lifecycle import Next, Verdict, decide
from hsm.errors import SubmissionError
from hsm.jobscript import GuardSettings
from hsm.sources.base import JobHandle, LaunchRequest, PollResult, SweepContext
from hsm.sources.login import Login
from hsm.sources.pbs import Pbs
from hsm.sources.process import CommandResult
from hsm.sources.queue import QueueSource
from hsm.sources.scheduler import ClusterSettings, Scheduler
from hsm.sources.slurm import Slurm
from hsm.states import Cause

ROOT = "/scratch/runs/s1"
Handler = Callable[[list[str], bytes | None], CommandResult]


def verdict(result: PollResult) -> Verdict:
    """What the engine decides from the facts the backend reported."""
    return decide(result.facts, lost_after=60)


def ok(argv: Sequence[str], stdout: str = "", code: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(tuple(argv), code, stdout, stderr)


class ScriptedLogin(Login):
    """Answers scheduler commands through ``handler``; files live in a dict."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[list[str]] = []
        self.files: dict[str, str] = {}

    @property
    def label(self) -> str:
        return "login01"

    @property
    def work_root(self) -> str:
        return ROOT

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60.0
    ) -> CommandResult:
        self.calls.append(list(argv))
        return self.handler(list(argv), input)

    async def prepare(self, ctx: SweepContext) -> None:
        return None

    def sweep_root(self, ctx: SweepContext) -> str:
        return ROOT

    def task_dir(self, ctx: SweepContext, number: int) -> str:
        return f"{ROOT}/tasks/task_{number:04d}"

    def project_dir(self, ctx: SweepContext) -> str:
        return "/scratch/code"

    def wrapper_path(self, ctx: SweepContext) -> str:
        return "/scratch/.hsm/wrapper.sh"

    async def write(self, root: str, files: Mapping[str, bytes]) -> None:
        self.calls.append(["<write>", str(len(files))])
        for rel, data in files.items():
            self.files[f"{root}/{rel}"] = data.decode(errors="replace")

    async def read(self, paths: Sequence[str]) -> dict[str, str]:
        return {p: self.files.get(p, "") for p in paths}

    async def missing(self, commands: Sequence[str]) -> list[str]:
        return []


def context() -> SweepContext:
    return SweepContext(
        sweep_id="s1",
        sweep_dir="/local/runs/s1",
        project_root="/local",
        project_name="local",
        guard=GuardSettings(0, 0, 0, 0, 0),
        wandb_group="s1",
        argv_for=lambda params, task_dir, python: ["true", *map(str, params.values())],
    )


def source(login: Login, scheduler: Scheduler | None = None, **settings: Any) -> QueueSource:
    return QueueSource(
        "c",
        scheduler=scheduler or Slurm(),
        login=login,
        settings=ClusterSettings(**settings),
        python="python3",
        setup=[],
    )


def requests(n: int) -> list[LaunchRequest]:
    return [
        LaunchRequest(number=i, attempt=1, params={"i": i}, slot=0, attempt_id=10 + i)
        for i in range(1, n + 1)
    ]


def status_text(state: str, cause: str | None, attempt: int = 1) -> str:
    return json.dumps(
        {
            "version": 1,
            "attempt": attempt,
            "status": state,
            "cause": cause,
            "exit_code": 0 if state == "completed" else None,
            "pid": 7,
            "pgid": 8,
            "host": "n1",
            "started": 1.0,
            "finished": 2.0,
        }
    )


def test_a_big_batch_becomes_chained_chunks() -> None:
    ids = iter(["101", "102", "103"])

    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        return ok(argv, next(ids) + "\n") if argv[0] == "sbatch" else ok(argv)

    login = ScriptedLogin(handler)
    src = source(login, throttle=2, max_array_size=2)
    handles = asyncio.run(src.launch(ctx=context(), requests=requests(5)))
    assert [h.job_id if isinstance(h, JobHandle) else h for h in handles] == [
        "101_1",
        "101_2",
        "102_1",
        "102_2",
        "103_1",
    ]
    sbatch = [c for c in login.calls if c[0] == "sbatch"]
    assert [c[2:-1] for c in sbatch] == [
        [],
        ["--dependency=afterany:101"],
        ["--dependency=afterany:102"],
    ]
    scripts = sorted(p for p in login.files if "/.hsm/jobs/" in p)
    assert scripts == [f"{ROOT}/.hsm/jobs/hsm-s1-{n}.sh" for n in (11, 13, 15)]
    assert "#SBATCH --array=1-2%2" not in login.files[scripts[0]]  # throttle >= size
    assert "hsm_tasks=(tasks/task_0003 tasks/task_0004)" in login.files[scripts[1]]
    # Every script, spec and marker is written, in one go, before the first submission.
    assert login.calls[0] == ["<write>", str(3 + 5 + 5)]
    marker = login.files[f"{ROOT}/tasks/task_0004/.hsm/submit"]
    assert marker == "hsm-submit-1\nhsm-s1-13\n2\n2\n1\n"
    assert login.files[f"{ROOT}/tasks/task_0005/.hsm/spec"].startswith("hsm-spec-3")


def test_a_chunk_refused_after_others_fails_only_its_own_requests() -> None:
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[0] == "sbatch":
            if any(a.startswith("--dependency") for a in argv):
                return ok(argv, code=1, stderr="sbatch: error: QOSMaxSubmitJobPerUserLimit")
            return ok(argv, "101\n")
        if argv[0] == "squeue":
            return ok(argv, "101_1|PENDING|n|None\n101_2|PENDING|n|None\n")
        return ok(argv)

    login = ScriptedLogin(handler)
    results = asyncio.run(
        source(login, max_array_size=2).launch(ctx=context(), requests=requests(3))
    )
    # The first array is queued and keeps its handles; only the third request failed.
    assert [r.job_id for r in results[:2] if isinstance(r, JobHandle)] == ["101_1", "101_2"]
    assert isinstance(results[2], SubmissionError)
    assert "QOSMaxSubmitJobPerUserLimit" in str(results[2])
    assert not any(call[0] == "scancel" for call in login.calls)


def test_a_batch_whose_first_chunk_is_refused_raises() -> None:
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[0] == "sbatch":
            return ok(argv, code=1, stderr="sbatch: error: QOSMaxSubmitJobPerUserLimit")
        return ok(argv)

    login = ScriptedLogin(handler)
    with pytest.raises(SubmissionError, match="QOSMaxSubmitJobPerUserLimit"):
        asyncio.run(source(login, max_array_size=2).launch(ctx=context(), requests=requests(3)))


def handle(number: int, job_id: str | None) -> JobHandle:
    return JobHandle(
        source="c",
        number=number,
        attempt=1,
        task_dir=f"{ROOT}/tasks/task_{number:04d}",
        job_id=job_id,
    )


def test_one_status_call_for_every_element_of_every_array() -> None:
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        return ok(argv, "101_1|COMPLETED|n|None\n101_2|RUNNING|n|None\n102_1|TIMEOUT|n|TimeLimit\n")

    login = ScriptedLogin(handler)
    login.files[f"{ROOT}/tasks/task_0001/status.json"] = status_text("completed", "completed")
    login.files[f"{ROOT}/tasks/task_0003/status.json"] = status_text("cancelled", "cancelled")
    handles = [handle(1, "101_1"), handle(2, "101_2"), handle(3, "102_1")]
    results = asyncio.run(source(login).poll(handles=handles))
    assert [c[0] for c in login.calls] == ["squeue"]
    assert login.calls[0][login.calls[0].index("-j") + 1] == "101,102"
    assert verdict(results[handles[0]]).next is Next.FINISHED
    assert verdict(results[handles[1]]).next is Next.STARTING  # running, no status read yet
    v = verdict(results[handles[2]])
    assert (v.next, v.cause) == (Next.FINISHED, Cause.TIMEOUT)


def test_a_silent_scheduler_is_never_taken_for_finished_jobs() -> None:
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        return ok(
            argv,
            code=1,
            stderr="slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
        )

    login = ScriptedLogin(handler)
    login.files[f"{ROOT}/tasks/task_0001/status.json"] = status_text("completed", "completed")
    src = source(login)
    handles = [handle(1, "101_1"), handle(2, "101_2")]
    results = asyncio.run(src.poll(handles=handles))
    assert verdict(results[handles[0]]).next is Next.FINISHED  # its wrapper says so
    assert verdict(results[handles[1]]).next is Next.UNKNOWN
    assert not src.reachable  # no new tasks until it answers again


def test_garbled_qstat_output_is_not_read_as_all_gone() -> None:
    login = ScriptedLogin(lambda argv, _: ok(argv, '{"Jobs": {"5[1].s": {"job_st'))
    src = source(login, Pbs("pro"))
    handles = [handle(1, "5[1].s"), handle(2, "5[2].s")]
    results = asyncio.run(src.poll(handles=handles))
    assert {verdict(r).next for r in results.values()} == {Next.UNKNOWN}


def test_a_submission_the_killed_controller_did_not_record_is_found_by_name() -> None:
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if "-n" in argv:  # looking for the job by its name
            return ok(argv, "107_1|RUNNING|hsm-s1-11|None\n107_2|PENDING|hsm-s1-11|None\n")
        return ok(argv, "107_1|RUNNING|hsm-s1-11|None\n107_2|PENDING|hsm-s1-11|None\n")

    login = ScriptedLogin(handler)
    login.files[f"{ROOT}/tasks/task_0002/.hsm/submit"] = "hsm-submit-1\nhsm-s1-11\n2\n2\n1\n"
    src = source(login)
    orphan, never = handle(2, None), handle(3, None)
    results = asyncio.run(src.poll(handles=[orphan, never]))
    assert verdict(results[orphan]).next is Next.STARTING  # pending as 107_2: not resubmitted
    v = verdict(results[never])
    assert (v.next, v.cause) == (Next.LOST, Cause.LOST)  # no marker: it was never submitted
    asyncio.run(src.cancel(handles=[orphan]))
    assert ["scancel", "107_2"] in login.calls


def test_cancel_stops_running_wrappers_gently_and_pending_elements_first() -> None:
    state = {"101_1": "RUNNING", "101_2": "PENDING"}

    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[0] == "squeue":
            return ok(argv, "".join(f"{k}|{v}|n|None\n" for k, v in state.items()))
        if argv[:2] == ["scancel", "--batch"]:
            state["101_1"] = "FAILED"  # the wrapper stopped its task and exited
        return ok(argv)

    login = ScriptedLogin(handler)
    asyncio.run(source(login).cancel(handles=[handle(1, "101_1"), handle(2, "101_2")]))
    cancels = [c for c in login.calls if c[0] == "scancel"]
    assert cancels == [
        ["scancel", "101_2"],
        ["scancel", "--batch", "--signal=TERM", "101_1"],
        ["scancel", "101_1"],
    ]


def test_a_sweep_asks_for_the_scheduler_s_health_sections_only_every_ten_minutes() -> None:
    # The sections (nodes, your own queue) are shown, not judged: in a sweep they cost
    # scheduler queries every few minutes at most, and the last answer is shown meanwhile.
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[:2] != ["bash", "-c"] or "--ping" not in argv[2]:
            return ok(argv)  # the checks before a sweep
        script = argv[2]
        out = "--disk\n1000 500\n--ping 0\nok\n"
        if "--nodes" in script:
            out += "--nodes\nbatch|up|4|idle\n--queue\nRUNNING\n"
        return ok(argv, out)

    now = [1000.0]
    clock.install(lambda: now[0], lambda: now[0])
    try:
        login = ScriptedLogin(handler)
        src = source(login)
        asyncio.run(src.prepare(ctx=context()))
        seen = []
        for step in (0, 60, 60, 600):
            now[0] += step
            sample = asyncio.run(src.probe())
            seen.append(("--nodes" in login.calls[-1][2], sample.extra.get("queue")))
            assert sample.reachable
        assert [asked for asked, _ in seen] == [True, False, False, True]
        assert all(queue == {"pending": 0, "running": 1} for _, queue in seen), seen
    finally:
        clock.reset()


def _retrying(login: Login) -> tuple[QueueSource, list[float]]:
    src = source(login)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    src.sleep = sleep
    return src, waits


def test_a_submission_the_scheduler_could_not_take_is_tried_again() -> None:
    answers = iter(
        [
            ok(["sbatch"], code=1, stderr="sbatch: error: Socket timed out on send/recv operation"),
            ok(["sbatch"], "205\n"),
        ]
    )

    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[0] == "sbatch":
            return next(answers)
        return ok(argv)  # squeue -n: no job of that name (the first try was not taken)

    login = ScriptedLogin(handler)
    src, waits = _retrying(login)
    handles = asyncio.run(src.launch(ctx=context(), requests=requests(2)))
    assert [h.job_id for h in handles if isinstance(h, JobHandle)] == ["205_1", "205_2"]
    assert [c[0] for c in login.calls if c[0] != "<write>"] == ["sbatch", "squeue", "sbatch"]
    assert waits == [1.0]


def test_a_submission_taken_despite_no_answer_is_never_submitted_twice() -> None:
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[0] == "sbatch":
            raise TimeoutError
        if "-n" in argv:  # the job, by its name: the scheduler took it
            return ok(argv, "301_1|PENDING|hsm-s1-11|None\n301_2|PENDING|hsm-s1-11|None\n")
        return ok(argv)

    login = ScriptedLogin(handler)
    src, waits = _retrying(login)
    handles = asyncio.run(src.launch(ctx=context(), requests=requests(2)))
    assert [h.job_id for h in handles if isinstance(h, JobHandle)] == ["301_1", "301_2"]
    assert [c[0] for c in login.calls].count("sbatch") == 1 and waits == []


def test_submission_retries_end() -> None:
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[0] == "sbatch":
            return ok(argv, code=1, stderr="sbatch: error: Unable to contact slurm controller")
        return ok(argv)

    login = ScriptedLogin(handler)
    src, waits = _retrying(login)
    with pytest.raises(SubmissionError, match="did not take the submission after 3 tries"):
        asyncio.run(src.launch(ctx=context(), requests=requests(1)))
    assert [c[0] for c in login.calls].count("sbatch") == 3 and waits == [1.0, 2.0]
