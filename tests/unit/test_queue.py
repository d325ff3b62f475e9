"""Queue backends without a cluster: state translation, chunking, resource merging and the
judgement of one attempt from the scheduler's word and the wrapper's status file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hsm.engine.lifecycle import FINAL_STATUS_GRACE, Facts, Next, QueueFacts, Verdict, decide
from hsm.errors import ConfigError
from hsm.jobscript import WrapperState, WrapperStatus
from hsm.sources.pbs import STATES as PBS_STATES
from hsm.sources.pbs import pbs_time
from hsm.sources.queue import QueueSource, chunks, job_name
from hsm.sources.registry import build_sources
from hsm.sources.scheduler import (
    ClusterSettings,
    Element,
    JobOptions,
    translate,
)
from hsm.sources.slurm import STATES as SLURM_STATES
from hsm.sources.slurm import slurm_time
from hsm.spec.config import load_config
from hsm.spec.sweep import Resources
from hsm.states import TERMINAL_ELEMENT, Cause, ElementState

S = ElementState


def status(
    state: str, cause: Cause | None, *, attempt: int = 1, exit_code: int | None = None
) -> WrapperStatus:
    return WrapperStatus(
        version=1,
        attempt=attempt,
        status=WrapperState(state),
        cause=cause,
        exit_code=exit_code,
        pid=42,
        pgid=43,
        host="node1",
        started=1.0,
        finished=None if state == "running" else 2.0,
    )


def el(state: ElementState, raw: str = "X") -> Element:
    return Element("12_3", state, raw)


# -- state maps -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PENDING", S.PENDING),
        ("CONFIGURING", S.PENDING),
        ("REQUEUED", S.PENDING),
        ("RUNNING", S.RUNNING),
        ("COMPLETING", S.RUNNING),
        ("SUSPENDED", S.RUNNING),
        ("COMPLETED", S.COMPLETED),
        ("FAILED", S.FAILED),
        ("TIMEOUT", S.TIMEOUT),
        ("DEADLINE", S.TIMEOUT),
        ("OUT_OF_MEMORY", S.OUT_OF_MEMORY),
        ("NODE_FAIL", S.NODE_FAIL),
        ("BOOT_FAIL", S.NODE_FAIL),
        ("PREEMPTED", S.PREEMPTED),
        ("CANCELLED", S.CANCELLED),
    ],
)
def test_slurm_state_map(raw: str, expected: ElementState) -> None:
    assert translate(raw, SLURM_STATES, "slurm") is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Q", S.PENDING),
        ("H", S.PENDING),
        ("W", S.PENDING),
        ("R", S.RUNNING),
        ("E", S.RUNNING),
        ("B", S.RUNNING),
        ("F", S.COMPLETED),
        ("X", S.COMPLETED),
        ("C", S.COMPLETED),
    ],
)
def test_pbs_state_map(raw: str, expected: ElementState) -> None:
    assert translate(raw, PBS_STATES, "pbs") is expected


def test_unknown_state_is_unknown_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hsm.sources.scheduler"):
        assert translate("WEIRD_NEW_STATE", SLURM_STATES, "slurm") is S.UNKNOWN
        assert translate("WEIRD_NEW_STATE", SLURM_STATES, "slurm") is S.UNKNOWN
    hits = [r for r in caplog.records if "WEIRD_NEW_STATE" in r.getMessage()]
    assert len(hits) == 1


def test_every_final_slurm_state_is_terminal() -> None:
    finals = {
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "CANCELLED",
        "BOOT_FAIL",
        "DEADLINE",
    }
    assert {raw for raw, state in SLURM_STATES.items() if state in TERMINAL_ELEMENT} >= finals
    assert not {raw for raw, state in SLURM_STATES.items() if state in TERMINAL_ELEMENT} & {
        "PENDING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
    }


# -- chunking and names ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [
        (0, 5, []),
        (1, 1000, [1]),
        (1000, 1000, [1000]),
        (1001, 1000, [1000, 1]),
        (2500, 1000, [1000, 1000, 500]),
        (7, 3, [3, 3, 1]),
    ],
)
def test_chunk_sizes(n: int, size: int, expected: list[int]) -> None:
    parts = chunks(list(range(n)), size)
    assert [len(p) for p in parts] == expected
    assert [x for p in parts for x in p] == list(range(n))  # order kept, nothing lost


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        chunks([1], 0)


def test_job_name_is_safe_for_any_sweep_id() -> None:
    assert job_name("20260101-120000-ab12", 17) == "hsm-20260101-120000-ab12-17"
    assert job_name("my sweep,'x'\n", 3) == "hsm-my_sweep__x__-3"


# -- walltime -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("walltime", "slurm", "pbs"),
    [
        ("1", "00:01:00", "00:01:00"),
        ("90", "01:30:00", "01:30:00"),
        ("04:00:00", "04:00:00", "04:00:00"),
        ("00:00:30", "00:00:30", "00:00:30"),
        ("1-02:03:04", "1-02:03:04", "26:03:04"),
        ("3-00:00:00", "3-00:00:00", "72:00:00"),
    ],
)
def test_walltime_conversion(walltime: str, slurm: str, pbs: str) -> None:
    seconds = Resources(walltime=walltime).walltime_seconds
    assert seconds is not None
    assert slurm_time(seconds) == slurm
    assert pbs_time(seconds) == pbs


@pytest.mark.parametrize("bad", ["1h", "4:00", "25:61:00", "1-25:00:00", "0", "-5", "soon"])
def test_walltime_in_a_wrong_format_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="walltime"):
        Resources(walltime=bad)


# -- resources ------------------------------------------------------------------------------
def test_sweep_resources_win_over_the_cluster_entry() -> None:
    cfg = ClusterSettings(
        partition="cpu",
        qos="normal",
        account="proj",
        gpu_type="v100",
        modules=("cuda/12",),
        directives=("--constraint=ib",),
    )
    res = Resources(
        gpus=2, cpus=8, mem="16G", walltime="02:00:00", partition="gpu", gpu_type="a100"
    )
    opts = JobOptions.merge(res, cfg, "distributed.remotes.c")
    assert opts == JobOptions(
        walltime_seconds=7200,
        cpus=8,
        mem_mb=16384,
        gpus=2,
        gpu_type="a100",
        partition="gpu",
        qos="normal",
        account="proj",
        modules=("cuda/12",),
        directives=("--constraint=ib",),
    )
    # No GPUs asked: the cluster's gpu_type does not apply.
    assert JobOptions.merge(Resources(), cfg, "x").gpu_type is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("partition", "gpu\n#SBATCH --wrap=evil"),
        ("account", "a b"),
        ("qos", "q;rm"),
        ("gpu_type", "$(x)"),
        ("partition", ""),
    ],
)
def test_unsafe_cluster_values_are_config_errors(key: str, value: str) -> None:
    cfg = ClusterSettings(**{key: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"distributed.remotes.c: {key}"):
        JobOptions.merge(Resources(gpus=1), cfg, "distributed.remotes.c")


def test_multi_line_directive_is_a_config_error() -> None:
    cfg = ClusterSettings(directives=("--constraint=a\necho pwned",))
    with pytest.raises(ConfigError, match="directives"):
        JobOptions.merge(Resources(), cfg, "distributed.remotes.c")


# -- judging one attempt --------------------------------------------------------------------
def judge(
    element: Element | None,
    wrapper: WrapperStatus | None,
    *,
    attempt: int = 1,
    blind: bool = False,
    grace_over: bool = False,
    cancelled: bool = False,
    hint: str = "",
) -> Verdict:
    """The lifecycle's verdict on the facts a queue backend reports."""
    queue = QueueFacts(
        state=element.state if element is not None else None,
        raw=element.raw if element is not None else "",
        reason=element.reason if element is not None else "",
        blind=blind,
        cancelled=cancelled,
        ended_for=FINAL_STATUS_GRACE if grace_over else 0.0,
        hint=hint,
    )
    facts = Facts(attempt=attempt, nonce="", status=wrapper, queue=queue)
    return decide(facts, lost_after=60)


def test_final_wrapper_status_wins_for_tasks_that_ended_on_their_own() -> None:
    done = status("completed", Cause.COMPLETED, exit_code=0)
    for element in (None, el(S.RUNNING), el(S.COMPLETED)):
        v = judge(element, done)
        assert (v.next, v.cause) == (Next.FINISHED, Cause.COMPLETED)
    failed = status("failed", Cause.TASK_FAILED, exit_code=3)
    v = judge(el(S.FAILED), failed)
    assert (v.next, v.cause) == (Next.FINISHED, Cause.TASK_FAILED)


@pytest.mark.parametrize("wrapper", [(Cause.COMPLETED, 0), (Cause.TASK_FAILED, 1)])
@pytest.mark.parametrize(
    ("element", "cause"), [(S.TIMEOUT, Cause.TIMEOUT), (S.PREEMPTED, Cause.PREEMPTED)]
)
def test_a_task_that_handled_its_walltime_signal_gets_the_scheduler_s_cause(
    wrapper: tuple[Cause, int], element: ElementState, cause: Cause
) -> None:
    ended = status("completed" if wrapper[1] == 0 else "failed", wrapper[0], exit_code=wrapper[1])
    v = judge(el(element), ended)
    assert (v.next, v.cause) == (Next.FINISHED, cause)


@pytest.mark.parametrize(
    ("element", "cause"),
    [
        (S.TIMEOUT, Cause.TIMEOUT),
        (S.PREEMPTED, Cause.PREEMPTED),
        (S.NODE_FAIL, Cause.NODE_FAIL),
        (S.OUT_OF_MEMORY, Cause.OUT_OF_MEMORY),
        (S.CANCELLED, Cause.CANCELLED),
        (S.FAILED, Cause.CANCELLED),  # no word from the scheduler: the wrapper's stands
    ],
)
def test_a_signalled_wrapper_takes_its_cause_from_the_scheduler(
    element: ElementState, cause: Cause
) -> None:
    stopped = status("cancelled", Cause.CANCELLED)
    v = judge(el(element), stopped)
    assert (v.next, v.cause) == (Next.FINISHED, cause)


def test_a_signalled_wrapper_waits_for_the_scheduler_s_final_state() -> None:
    stopped = status("cancelled", Cause.CANCELLED)
    for element in (S.RUNNING, S.PENDING):  # still completing, or requeued by the scheduler
        assert judge(el(element), stopped).next is Next.RUNNING
    killed = status("failed", Cause.SIGNAL, exit_code=137)
    v = judge(el(S.OUT_OF_MEMORY), killed)
    assert (v.next, v.cause) == (Next.FINISHED, Cause.OUT_OF_MEMORY)


def test_scheduler_kill_without_a_final_status_is_lost_with_the_scheduler_s_cause() -> None:
    v = judge(el(S.TIMEOUT, "TIMEOUT"), None, hint="; see job.log")
    assert (v.next, v.cause) == (Next.LOST, Cause.TIMEOUT)
    assert "TIMEOUT" in v.detail and "job.log" in v.detail
    v = judge(el(S.CANCELLED), None)
    assert (v.next, v.cause) == (Next.LOST, Cause.CANCELLED)
    v = judge(el(S.FAILED), None)
    assert (v.next, v.cause) == (Next.LOST, Cause.LOST)


def test_a_started_attempt_gets_a_grace_for_its_final_status() -> None:
    running = status("running", None)
    assert judge(el(S.NODE_FAIL), running).next is Next.UNKNOWN
    v = judge(el(S.NODE_FAIL), running, grace_over=True)
    assert (v.next, v.cause) == (Next.LOST, Cause.NODE_FAIL)
    assert judge(None, running).next is Next.UNKNOWN
    v = judge(None, running, grace_over=True, cancelled=True)
    assert (v.next, v.cause) == (Next.LOST, Cause.CANCELLED)


def test_pending_and_running_elements() -> None:
    v = judge(Element("1_1", S.PENDING, "PENDING", reason="JobArrayTaskLimit"), None)
    assert (v.next, v.detail) == (Next.STARTING, "JobArrayTaskLimit")
    assert judge(el(S.RUNNING), None).next is Next.STARTING  # the wrapper has not written yet
    assert judge(el(S.RUNNING), status("running", None)).next is Next.RUNNING
    v = judge(el(S.UNKNOWN, "WEIRD"), None)
    assert v.next is Next.UNKNOWN and "WEIRD" in v.detail


def test_status_of_an_older_attempt_is_ignored() -> None:
    old = status("completed", Cause.COMPLETED, attempt=1, exit_code=0)
    assert judge(el(S.PENDING), old, attempt=2).next is Next.STARTING
    v = judge(el(S.FAILED), old, attempt=2, grace_over=True)
    assert (v.next, v.cause) == (Next.LOST, Cause.LOST)


def test_gone_from_the_scheduler() -> None:
    v = judge(None, None)
    assert v.next is Next.LOST and "never started" in v.detail
    v = judge(None, None, cancelled=True)
    assert (v.next, v.cause) == (Next.LOST, Cause.CANCELLED)
    # A scheduler whose listing cannot name elements: the status files decide.
    assert judge(None, None, blind=True, grace_over=True).next is Next.STARTING
    assert judge(None, status("running", None), blind=True, grace_over=True).next is Next.RUNNING


def test_a_scheduler_that_does_not_answer() -> None:
    done = status("completed", Cause.COMPLETED, exit_code=0)
    facts = Facts(attempt=1, nonce="", status=done, queue=QueueFacts(answered=False))
    assert decide(facts, lost_after=60).next is Next.FINISHED
    stopped = status("cancelled", Cause.CANCELLED)  # only the scheduler can tell why
    facts = Facts(attempt=1, nonce="", status=stopped, queue=QueueFacts(answered=False))
    assert decide(facts, lost_after=60).next is Next.UNKNOWN


def test_unsplittable_module_line_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "hsm_config.yaml").write_text(
        "distributed:\n  remotes:\n    c: {type: slurm, host: local, modules: ['cuda \"12']}\n"
    )
    with pytest.raises(ConfigError, match="distributed.remotes.c.modules"):
        build_sources(load_config(None, tmp_path), ["c"], parallel=None)


def test_a_cluster_entry_builds_a_queue_source(tmp_path: Path) -> None:
    (tmp_path / "hsm_config.yaml").write_text(
        "distributed:\n  remotes:\n"
        "    c: {type: slurm, host: local, max_parallel_jobs: 3}\n"
        "    p: {type: pbs, host: local, array_throttle: 5, max_array_size: 50}\n"
    )
    sources = build_sources(load_config(None, tmp_path), ["c", "p"], parallel=None)
    slurm, pbs = sources["c"], sources["p"]
    assert isinstance(slurm, QueueSource) and isinstance(pbs, QueueSource)
    assert (slurm.scheduler.name, slurm.throttle, slurm.capabilities.queue) == ("slurm", 3, True)
    assert (pbs.scheduler.name, pbs.throttle, pbs.chunk_size) == ("pbs", 5, 50)
