"""Parsers of scheduler output, against recorded outputs in tests/golden/data.

The Slurm files (squeue, scontrol show config) and the output of Slurm's PBS wrappers
(``slurm-wlm-torque``'s ``qstat -f``) were recorded on the test-bed Slurm. The PBS Pro JSON and
the Torque XML and text outputs were written from the documented formats (qstat(1B) of
OpenPBS, the Torque 6 administrator guide); they were not recorded on a real PBS server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hsm.sources.base import HealthSample
from hsm.sources.pbs import Pbs, canonical, parse_qstat_json, parse_qstat_text, parse_qstat_xml
from hsm.sources.probe import parse_queue_probe
from hsm.sources.process import CommandResult
from hsm.sources.slurm import (
    Slurm,
    parse_config,
    parse_exit_code,
    parse_sacct,
    parse_sinfo,
    parse_squeue,
)
from hsm.states import ElementState

DATA = Path(__file__).parents[1] / "golden" / "data"
S = ElementState


def read(name: str) -> str:
    return (DATA / name).read_text()


# -- Slurm ----------------------------------------------------------------------------------
def test_squeue_one_line_per_element() -> None:
    elements = {e.job_id: e for e in parse_squeue(read("slurm_squeue.txt"))}
    assert elements["231_1"].state is S.CANCELLED
    assert elements["231_2"].state is S.RUNNING
    assert (elements["231_4"].state, elements["231_4"].reason) == (S.PENDING, "JobArrayTaskLimit")
    assert elements["217_3"].state is S.FAILED
    assert elements["217_5"].state is S.COMPLETED
    assert (elements["229_1"].state, elements["229_1"].raw) == (S.TIMEOUT, "TIMEOUT")
    assert elements["231_2"].name == "hsm-demo-7"
    assert "231_6" not in elements  # cancelled while pending: the controller drops it


def test_scontrol_show_config() -> None:
    config = parse_config(read("slurm_show_config.txt"))
    assert config["MaxArraySize"] == "1001"
    assert config["AccountingStorageType"] == "accounting_storage/none"
    assert config["KillWait"] == "5 sec"
    assert config["MinJobAge"] == "600 sec"
    assert config["OverTimeLimit"] == "0 min"


def test_sacct_final_states_and_exit_codes() -> None:
    elements = {e.job_id: e for e in parse_sacct(read("slurm_sacct.txt"))}
    assert {k: e.state for k, e in elements.items()} == {
        "5120_1": S.COMPLETED,
        "5120_2": S.FAILED,
        "5120_3": S.TIMEOUT,
        "5120_4": S.OUT_OF_MEMORY,
        "5120_5": S.CANCELLED,
        "5120_6": S.NODE_FAIL,
        "5120_7": S.PREEMPTED,
        "5120_8": S.RUNNING,
    }  # the pending range 5120_[9-12%2] is skipped: it is still in the live queue
    assert elements["5120_2"].exit_code == 3
    assert elements["5120_5"].exit_code == 128 + 15
    assert elements["5120_5"].raw == "CANCELLED"


@pytest.mark.parametrize(
    ("text", "code"), [("0:0", 0), ("3:0", 3), ("0:9", 137), ("", None), ("x:0", None)]
)
def test_sacct_exit_code(text: str, code: int | None) -> None:
    assert parse_exit_code(text) == code


def test_sinfo_partitions() -> None:
    info = parse_sinfo(
        ["debug*|up|1|mixed", "gpu|up|2|idle", "gpu|up|1|down*", "old|down|3|idle", "garbage"]
    )
    assert info["partitions"]["debug"] == {
        "available": "up",
        "default": True,
        "nodes": {"mixed": 1},
    }
    assert info["partitions"]["gpu"]["nodes"] == {"idle": 2, "down": 1}
    assert info["usable_nodes"] == 3  # down nodes and down partitions do not count


def test_slurm_job_ids() -> None:
    slurm = Slurm()
    assert slurm.parse_submit("1234\n") == "1234"
    assert slurm.parse_submit("1234;cluster2\n") == "1234"
    with pytest.raises(ValueError):
        slurm.parse_submit("sbatch: error: something\n")
    assert slurm.element_id("1234", 7, 10) == "1234_7"
    assert slurm.array_of("1234_7") == "1234"


def test_slurm_ignores_an_invalid_job_id_answer() -> None:
    slurm = Slurm()
    forgotten = CommandResult(
        ("squeue",), 1, "", "slurm_load_jobs error: Invalid job id specified\n"
    )
    down = CommandResult(
        ("squeue",),
        1,
        "",
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
    )
    assert not slurm.status_failed(forgotten)
    assert slurm.status_failed(down)


def test_slurm_probe_output() -> None:
    text = (
        "--df\n/dev/sda1 100000 40000 60000 40% /\n--ping 0\n"
        "Slurmctld(primary) at vm is UP\n--nodes\ndebug*|up|1|idle\n"
        "--queue\nPENDING\nPENDING\nRUNNING\nCOMPLETING\n"
    )
    sample = parse_queue_probe(Slurm(), text, "/work")
    assert sample.reachable and (sample.free_bytes, sample.total_bytes) == (60000, 100000)
    assert sample.extra["controller"] == "up"
    assert sample.extra["queue"] == {"pending": 2, "running": 2}
    assert sample.extra["usable_nodes"] == 1


def test_slurm_probe_with_the_controller_down() -> None:
    text = "--df\n/dev/sda1 100000 40000 60000 40% /\n--ping 1\nSlurmctld(primary) at vm is DOWN\n"
    sample = parse_queue_probe(Slurm(), text, "/work")
    assert isinstance(sample, HealthSample)
    assert not sample.reachable
    assert sample.extra["controller"] == "down"
    assert sample.error is not None and "is DOWN" in sample.error
    assert sample.free_bytes == 60000


# -- PBS ------------------------------------------------------------------------------------
def test_pbs_pro_json() -> None:
    elements = {e.job_id: e for e in parse_qstat_json(read("pbs_pro_qstat.json"))}
    assert elements["4101[]"].state is S.RUNNING  # the array itself: begun
    assert {i: elements[f"4101[{i}]"].state for i in range(1, 9)} == {
        1: S.COMPLETED,
        2: S.FAILED,
        3: S.TIMEOUT,
        4: S.OUT_OF_MEMORY,
        5: S.FAILED,
        6: S.RUNNING,
        7: S.RUNNING,
        8: S.PENDING,
    }
    assert elements["4101[2]"].exit_code == 3
    assert elements["4101[8]"].reason.startswith("Not Running")
    assert elements["4102"].state is S.NODE_FAIL  # failed to start: the node's fault
    assert elements["4101[1]"].name == "hsm-20260101-120000-ab12-17"


def test_pbs_pro_json_without_jobs() -> None:
    assert parse_qstat_json('{"timestamp":1,"pbs_version":"2024.1","pbs_server":"s"}') == []
    assert parse_qstat_json("") == []
    with pytest.raises(ValueError):
        parse_qstat_json('{"Jobs": {"1.s": {"job_state": "R"')


def test_torque_xml() -> None:
    elements = {e.job_id: e for e in parse_qstat_xml(read("torque_qstat.xml"))}
    assert {i: elements[f"812[{i}]"].state for i in range(1, 6)} == {
        1: S.COMPLETED,
        2: S.TIMEOUT,
        3: S.OUT_OF_MEMORY,
        4: S.RUNNING,
        5: S.PENDING,
    }
    assert elements["812[]"].name == "hsm-20260101-120000-ab12-17"


def test_torque_text() -> None:
    elements = {e.job_id: e for e in parse_qstat_text(read("torque_qstat_f.txt"), "torque")}
    assert elements["812[1]"].state is S.COMPLETED
    assert elements["812[2]"].state is S.TIMEOUT
    assert elements["812[4]"].state is S.RUNNING
    assert elements["812[2]"].reason == "job exceeded a walltime limit"


def test_qstat_text_of_slurm_s_pbs_wrappers() -> None:
    elements = parse_qstat_text(read("pbs_slurm_wrapper_qstat_f.txt"))
    assert [(e.job_id, e.state) for e in elements] == [
        ("222", S.COMPLETED),
        ("229", S.COMPLETED),
        ("230", S.COMPLETED),
    ]
    assert elements[1].name == "hsm-20261129-025854-5827-1"


def test_pbs_job_ids() -> None:
    pro = Pbs("pro")
    assert pro.parse_submit("4101[].pbs01\n") == "4101[].pbs01"
    assert pro.parse_submit("4102.pbs01\n") == "4102.pbs01"
    assert Pbs("generic").parse_submit("209\n") == "209"
    with pytest.raises(ValueError):
        pro.parse_submit("qsub: Unknown queue\n")
    assert pro.element_id("4101[].pbs01", 7, 8) == "4101[7].pbs01"
    assert pro.element_id("4102.pbs01", 1, 1) == "4102.pbs01"  # one task: a plain job
    assert pro.array_of("4101[7].pbs01") == "4101[].pbs01"
    assert pro.array_of("4102.pbs01") == "4102.pbs01"
    assert canonical("4101[7].pbs01") == "4101[7]"
    assert canonical("4102.pbs01") == "4102"
    assert Pbs("generic").element_id("209", 3, 5) == "209[3]"


def test_pbs_status_answer() -> None:
    pro = Pbs("pro")
    assert not pro.status_failed(CommandResult(("qstat",), 153, "", "qstat: Unknown Job Id"))
    assert not pro.status_failed(CommandResult(("qstat",), 35, '{"Jobs": {}}', ""))
    assert pro.status_failed(CommandResult(("qstat",), 1, "", "Connection refused"))


@pytest.mark.parametrize(
    ("flavor", "argv"),
    [
        (
            "pro",
            [
                "qsub",
                "-o",
                "/dev/null",
                "-e",
                "/dev/null",
                "-J",
                "1-8",
                "-W",
                "max_run_subjobs=2",
                "job.sh",
            ],
        ),
        ("torque", ["qsub", "-o", "/dev/null", "-e", "/dev/null", "-t", "1-8%2", "job.sh"]),
        ("generic", ["qsub", "-o", "/dev/null", "-e", "/dev/null", "-J", "1-8%2", "job.sh"]),
    ],
)
def test_pbs_submit_argv(flavor: str, argv: list[str]) -> None:
    from hsm.sources.scheduler import ArraySpec

    assert Pbs(flavor).submit_argv("job.sh", ArraySpec("n", 8, 2), None) == argv
    single = Pbs(flavor).submit_argv("job.sh", ArraySpec("n", 1, 2), None)
    assert single == ["qsub", "-o", "/dev/null", "-e", "/dev/null", "job.sh"]


def test_pbs_probe_queue_counts() -> None:
    text = (
        "--df\nfs 100 40 60 40% /\n--ping 0\nQueue Max Tot\n--queue\n\npbs01:\n"
        "Job ID  Username Queue Jobname SessID NDS TSK Memory Time  S Time\n"
        "------- -------- ----- ------- ------ --- --- ------ ----- - -----\n"
        "4101[].pbs01 alice workq hsm-x -- 1 4 16gb 04:00 B 00:01\n"
        "4103.pbs01 alice workq hsm-y -- 1 4 16gb 04:00 Q --\n"
    )
    sample = parse_queue_probe(Pbs("pro"), text, "~/hsm")
    assert sample.reachable
    assert sample.extra["queue"] == {"pending": 1, "running": 1}


def test_every_pbs_flavour_asks_only_for_the_sweep_s_own_jobs() -> None:
    for flavor in ("pro", "torque", "generic"):
        argv = Pbs(flavor).status_argv(["12[].s", "13[].s"])
        assert argv[0] == "qstat" and argv[-2:] == ["12[].s", "13[].s"], (flavor, argv)
