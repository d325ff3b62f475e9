"""Rendered sbatch and PBS job scripts, compared with golden files, and run with bash to show
that hostile folder names (quotes, spaces, newlines, ``$(...)``) reach the wrapper intact.

Set HSM_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hsm.errors import ConfigError
from hsm.sources.pbs import Pbs
from hsm.sources.scheduler import ArraySpec, ClusterSettings, JobOptions, Scheduler
from hsm.sources.slurm import Slurm
from hsm.spec.sweep import Resources

DATA = Path(__file__).parent / "data"
HOSTILE_ROOT = (
    '/scratch/it\'s a "dir"\n$(touch /tmp/hsm-canary) `id`;x\n#SBATCH --qos=evil\n'
    "#PBS -q evil/sweeps/s1/cluster"
)
HOSTILE_WRAPPER = '/scratch/it\'s a "dir"\n$(touch /tmp/hsm-canary)/.hsm/wrapper-0123.sh'
TASKS = ["task_0001", "task_0007", "task_0042"]

FULL = JobOptions.merge(
    Resources(
        gpus=2,
        cpus=8,
        mem="16G",
        walltime="1-02:03:04",
        partition="gpu",
        gpu_type="a100",
        signal="USR1@90",
    ),
    ClusterSettings(
        qos="high",
        account="proj42",
        modules=("cuda/12.1", "python/3.11 gcc/12"),
        directives=("--constraint=ib", "#SBATCH --exclusive"),
    ),
    "distributed.remotes.c",
)
FULL_PBS = JobOptions.merge(
    Resources(
        gpus=2,
        cpus=8,
        mem="16G",
        walltime="1-02:03:04",
        partition="gpuq",
        gpu_type="a100",
        signal="USR2@120",
    ),
    ClusterSettings(account="proj42", modules=("cuda/12.1",), directives=("-l place=excl",)),
    "distributed.remotes.c",
)
ARRAY = ArraySpec("hsm-20260101-120000-ab12-17", len(TASKS), 2)


def check_golden(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("HSM_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


@pytest.mark.parametrize(
    ("name", "scheduler", "opts"),
    [
        ("slurm_job.sh", Slurm(), FULL),
        ("slurm_job_minimal.sh", Slurm(), JobOptions()),
        ("pbs_pro_job.sh", Pbs("pro"), FULL_PBS),
        ("pbs_torque_job.sh", Pbs("torque"), FULL_PBS),
    ],
)
def test_rendered_job_script(name: str, scheduler: Scheduler, opts: JobOptions) -> None:
    text = scheduler.render(opts, ARRAY, root=HOSTILE_ROOT, wrapper=HOSTILE_WRAPPER, tasks=TASKS)
    check_golden(name, text)
    # Schedulers read directives up to the first command: only the header is read, and no
    # folder name (even one with a directive-looking line) can end up in it.
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert lines[first].startswith("hsm_root=")
    assert all("scratch" not in line and "evil" not in line for line in lines[:first])
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_slurm_header_maps_every_resource() -> None:
    header = Slurm().header(FULL, ARRAY)
    assert header == [
        "#SBATCH --job-name=hsm-20260101-120000-ab12-17",
        "#SBATCH --array=1-3%2",
        "#SBATCH --output=/dev/null",
        "#SBATCH --no-requeue",
        "#SBATCH --time=1-02:03:04",
        "#SBATCH --signal=B:USR1@90",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=16384M",
        "#SBATCH --gres=gpu:a100:2",
        "#SBATCH --partition=gpu",
        "#SBATCH --qos=high",
        "#SBATCH --account=proj42",
        "#SBATCH --constraint=ib",
        "#SBATCH --exclusive",
    ]
    # A throttle at or above the array size is no throttle.
    assert "#SBATCH --array=1-3" in Slurm().header(JobOptions(), ArraySpec("n", 3, 3))


def test_pbs_headers_map_every_resource() -> None:
    pro = Pbs("pro").header(FULL_PBS, ARRAY)
    assert "#PBS -l walltime=26:03:04" in pro
    assert "#PBS -l select=1:ncpus=8:mem=16384mb:ngpus=2:gpu_type=a100" in pro
    assert "#PBS -q gpuq" in pro and "#PBS -A proj42" in pro and "#PBS -l place=excl" in pro
    torque = Pbs("torque").header(FULL_PBS, ARRAY)
    assert "#PBS -l nodes=1:ppn=8:gpus=2:a100" in torque
    assert "#PBS -l mem=16384mb" in torque


def test_pbs_sends_the_checkpoint_signal_itself(tmp_path: Path) -> None:
    # PBS cannot signal before the walltime: the job script starts a timer that signals the
    # wrapper (the job script becomes the wrapper) SECONDS before the walltime.
    root, _, record = _fake_tree(tmp_path)
    wrapper = Path(root) / "waits.sh"
    wrapper.write_text(
        f"trap 'printf USR2 > {_sh(record)}; exit 0' USR2\n"
        "for _ in $(seq 100); do sleep 0.1; done; exit 1\n"
    )
    opts = JobOptions.merge(
        Resources(walltime="00:00:03", signal="USR2@2"), ClusterSettings(), "distributed.remotes.c"
    )
    text = Pbs("pro").render(opts, ARRAY, root=root, wrapper=str(wrapper), tasks=TASKS)
    assert "sleep 1 && kill -USR2 $$" in text
    proc = subprocess.run(
        ["bash", "-c", text],
        env={**os.environ, "PBS_ARRAY_INDEX": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert record.read_text() == "USR2"
    # Without a walltime there is nothing to count from: refused before anything starts.
    bare = JobOptions.merge(Resources(signal="USR1@60"), ClusterSettings(), "c")
    with pytest.raises(ConfigError, match="resources.signal: USR1@60 needs resources.walltime"):
        Pbs("pro").check_signal(bare)
    Slurm().check_signal(bare)  # Slurm signals by itself


def test_a_directive_of_another_scheduler_is_refused() -> None:
    opts = JobOptions(directives=("#PBS -l place=excl",))
    with pytest.raises(ConfigError, match="not a #SBATCH line"):
        Slurm().header(opts, ARRAY)


def _fake_tree(tmp_path: Path) -> tuple[str, str, Path]:
    """A hostile root with real task folders and a fake wrapper that records its argument."""
    root = tmp_path / 'it\'s a "dir"\n$(touch canary) `id`;x'
    for task in TASKS:
        (root / task / ".hsm").mkdir(parents=True)
    record = tmp_path / "wrapper-argv"
    wrapper = root / "wrapper.sh"
    wrapper.write_text(f'printf "%s" "$1" > {_sh(record)}; echo "wrapper ran"\n')
    return str(root), str(wrapper), record


def _sh(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


@pytest.mark.parametrize("scheduler", [Slurm(), Pbs("pro")], ids=["slurm", "pbs"])
def test_hostile_folders_reach_the_wrapper_intact(tmp_path: Path, scheduler: Scheduler) -> None:
    root, wrapper, record = _fake_tree(tmp_path)
    text = scheduler.render(JobOptions(), ARRAY, root=root, wrapper=wrapper, tasks=TASKS)
    index = "SLURM_ARRAY_TASK_ID" if scheduler.name == "slurm" else "PBS_ARRAY_INDEX"
    proc = subprocess.run(
        ["bash", "-c", text],
        env={**os.environ, index: "2"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert record.read_text() == f"{root}/task_0007"
    log = (Path(root) / "task_0007" / ".hsm" / "job.log").read_text()
    assert "element 2" in log and "wrapper ran" in log
    assert not (tmp_path / "canary").exists() and not Path("/tmp/hsm-canary").exists()


@pytest.mark.parametrize("index", ["0", "4", "", "1;id"])
def test_an_index_outside_the_array_runs_nothing(tmp_path: Path, index: str) -> None:
    root, wrapper, record = _fake_tree(tmp_path)
    text = Slurm().render(JobOptions(), ARRAY, root=root, wrapper=wrapper, tasks=TASKS)
    proc = subprocess.run(
        ["bash", "-c", text],
        env={**os.environ, "SLURM_ARRAY_TASK_ID": index},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "is not within 1..3" in proc.stderr
    assert not record.exists()


def test_modules_are_loaded_in_order_before_the_wrapper(tmp_path: Path) -> None:
    root, wrapper, record = _fake_tree(tmp_path)
    loaded = tmp_path / "modules"
    opts = JobOptions(modules=("cuda/12.1", "python/3.11 gcc/12"))
    text = Slurm().render(opts, ARRAY, root=root, wrapper=wrapper, tasks=TASKS)
    env = {
        **os.environ,
        "SLURM_ARRAY_TASK_ID": "1",
        "BASH_FUNC_module%%": f'() {{ echo "$*" >> {_sh(loaded)}; }}',
    }
    proc = subprocess.run(["bash", "-c", text], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert loaded.read_text() == "load cuda/12.1\nload python/3.11 gcc/12\n"
    assert record.read_text() == f"{root}/task_0001"


def test_a_failing_module_load_stops_the_element(tmp_path: Path) -> None:
    root, wrapper, record = _fake_tree(tmp_path)
    opts = JobOptions(modules=("nosuchmodule/1",))
    text = Slurm().render(opts, ARRAY, root=root, wrapper=wrapper, tasks=TASKS)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "3", "BASH_FUNC_module%%": "() { return 1; }"}
    proc = subprocess.run(["bash", "-c", text], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert not record.exists()
    log = (Path(root) / "task_0042" / ".hsm" / "job.log").read_text()
    assert "hsm: module load nosuchmodule/1 failed" in log


def test_placeholders_in_folder_names_stay_literal() -> None:
    root = "/scratch/@TASKS@ @INDEX@ @MODULES@"
    text = Slurm().render(JobOptions(), ARRAY, root=root, wrapper="/w/@ROOT@.sh", tasks=TASKS)
    assert "hsm_root='/scratch/@TASKS@ @INDEX@ @MODULES@'\n" in text
    assert "hsm_wrapper=/w/@ROOT@.sh\n" in text
