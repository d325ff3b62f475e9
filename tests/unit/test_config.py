"""The project config: defaults, discovery, sizes, and one clear message per bad file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hsm.errors import ConfigError, ExitCode
from hsm.spec.config import (
    CONFIG_FILENAME,
    LoadedConfig,
    ProjectConfig,
    RemoteConfig,
    cpu_count,
    load_config,
    local_slots,
)

GB = 10**9
MB = 10**6


def write(folder: Path, text: str, name: str = CONFIG_FILENAME) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> LoadedConfig:
    write(tmp_path, text)
    return load_config(None, tmp_path)


def assert_clean_message(message: str, *parts: str) -> None:
    """One line, no traceback, no pydantic dump, and naming every part."""
    assert "\n" not in message
    assert "Traceback" not in message
    assert "pydantic" not in message
    assert "https://" not in message
    assert "validation error" not in message
    for part in parts:
        assert part in message, (part, message)


def error_for(tmp_path: Path, text: str) -> str:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    return info.value.message


# --- defaults ---------------------------------------------------------------------


def test_defaults_match_the_design() -> None:
    c = ProjectConfig()
    assert c.local.max_parallel_jobs is None and c.local.gpus is None
    assert c.disk.project_min_free == 2 * GB
    assert c.disk.task_min_free == 1 * GB
    assert c.disk.check_interval == 300
    assert c.disk.warn_below == 1 * GB
    assert c.disk.kill_below == 200 * MB
    assert c.health.disk_critical_free == 1 * GB
    assert c.health.disk_critical_percent == 5
    assert c.health.disk_warning_free == 3 * GB
    assert c.health.disk_warning_percent == 10
    assert c.health.max_load_per_core == 2.0
    assert c.health.max_memory_percent == 95
    d = c.distributed
    assert d.enabled is True
    assert d.strategy == "round_robin"
    assert d.enable_source_failsafe is True
    assert d.source_failure_threshold == 0.4
    assert d.min_jobs_for_failsafe == 5
    assert d.auto_disable_unhealthy_sources is True
    assert d.health_check_failure_threshold == 3
    assert d.health_check_interval == 60
    assert d.include_local is True
    assert d.max_retries == 2
    assert d.ssh_config is None
    assert d.remotes == {}
    assert c.output_dir == "runs" and c.state_dir == ".hsm"
    assert c.effective_ssh_config() == "~/.ssh/config"


def test_remote_defaults() -> None:
    r = RemoteConfig(host="blossom")
    assert r.type == "ssh" and r.port is None and r.user is None
    assert r.max_parallel_jobs == 4 and r.remote_root == "~/hsm" and r.python == "python3"
    assert r.setup == [] and r.enabled is True and r.keep_remote is False
    assert r.connect_timeout == 3.0 and r.keepalive_interval == 1.0 and r.keepalive_count_max == 3
    assert r.exclude == [] and r.modules == [] and r.directives == []


def test_no_config_file_means_defaults(tmp_path: Path) -> None:
    loaded = load_config(None, tmp_path)
    assert loaded.path is None
    assert loaded.project_root == tmp_path.resolve()
    assert loaded.config == ProjectConfig()
    assert loaded.output_dir == tmp_path.resolve() / "runs"
    assert loaded.state_dir == tmp_path.resolve() / ".hsm"


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "# nothing here\n")
    assert loaded.config == ProjectConfig()
    assert loaded.path == (tmp_path / CONFIG_FILENAME).resolve()


def test_config_is_found_in_a_parent_folder(tmp_path: Path) -> None:
    write(tmp_path, "distributed: {max_retries: 7}\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    loaded = load_config(None, deep)
    assert loaded.config.distributed.max_retries == 7
    assert loaded.project_root == tmp_path.resolve()


def test_explicit_config(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    write(other, "output_dir: out\n", name="my.yaml")
    loaded = load_config(Path("elsewhere/my.yaml"), tmp_path)
    assert loaded.project_root == other.resolve()
    assert loaded.output_dir == other.resolve() / "out"


def test_full_example(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        local:
          max_parallel_jobs: 3
          gpus: [0, 1]
        disk:
          project_min_free: 1.5GiB
          task_min_free: 500MB
          check_interval: 2
          warn_below: 100MB
          kill_below: 10000000
        health:
          disk_critical_percent: 2.5
          max_load_per_core: 0.5
        distributed:
          strategy: least_loaded
          source_failure_threshold: 1
          health_check_interval: 0.5
          ssh_config: ./ssh_config
          remotes:
            blossom:
              host: blossom
              port: 2222
              setup: ["module load cuda/12", "source ~/venv/bin/activate"]
              gpus: all
            cluster-1.a:
              type: slurm
              host: login1
              partition: gpu
              directives: ["--constraint=a100"]
              array_throttle: 10
        ssh_config: ~/other
        state_dir: /var/tmp/hsm-state
        """,
    )
    c = loaded.config
    assert local_slots(c) == 3
    assert c.local.gpus == [0, 1]
    assert c.disk.project_min_free == int(1.5 * 2**30)
    assert c.disk.task_min_free == 500 * MB
    assert c.disk.kill_below == 10 * MB
    assert c.health.disk_critical_percent == 2.5
    assert c.distributed.strategy == "least_loaded"
    assert c.distributed.health_check_interval == 0.5
    assert c.distributed.remotes["blossom"].port == 2222
    assert c.distributed.remotes["blossom"].gpus == "all"
    assert c.distributed.remotes["cluster-1.a"].type == "slurm"
    assert c.distributed.remotes["cluster-1.a"].array_throttle == 10
    assert c.effective_ssh_config() == "./ssh_config"
    assert loaded.ssh_config_path == loaded.project_root / "ssh_config"
    assert loaded.state_dir == Path("/var/tmp/hsm-state")


def test_top_level_ssh_config_is_the_fallback() -> None:
    c = ProjectConfig.model_validate({"ssh_config": "~/x"})
    assert c.effective_ssh_config() == "~/x"


def test_local_slots_defaults_to_the_core_count() -> None:
    assert local_slots(ProjectConfig()) == cpu_count() >= 1


# --- error messages ---------------------------------------------------------------


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Path("nope.yaml"), tmp_path)
    assert_clean_message(info.value.message, "nope.yaml", "not found")


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    message = error_for(tmp_path, "distributed:\n  strategy: [round_robin\nlocal: {}\n")
    assert_clean_message(message, CONFIG_FILENAME, "invalid YAML", "line 3")


def test_bad_indentation_names_the_line(tmp_path: Path) -> None:
    message = error_for(tmp_path, "disk:\n  check_interval: 5\n warn_below: 1GB\n")
    assert_clean_message(message, CONFIG_FILENAME, "invalid YAML", "line 3")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    message = error_for(tmp_path, "- a\n- b\n")
    assert_clean_message(message, CONFIG_FILENAME, "mapping", "line 1")


def test_duplicate_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, "disk:\n  check_interval: 5\n  check_interval: 6\n")
    assert_clean_message(message, "disk.check_interval", "duplicate", "line 3")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "distributed:\n  strateg: least_loaded\n",
            ["unknown key 'distributed.strateg'", "did you mean 'strategy'?", "line 2"],
        ),
        ("lcoal:\n  gpus: all\n", ["unknown key 'lcoal'", "did you mean 'local'?", "line 1"]),
        (
            "distributed:\n  remotes:\n    blossom:\n      host: b\n      remote_rot: /x\n",
            ["distributed.remotes.blossom.remote_rot", "did you mean 'remote_root'?", "line 5"],
        ),
        (
            "strategy: least_loaded\n",
            ["unknown key 'strategy'", "did you mean 'distributed.strategy'?", "line 1"],
        ),
        ("zzz: 1\n", ["unknown key 'zzz'", "valid keys here: local, disk", "line 1"]),
    ],
)
def test_unknown_keys_suggest_the_nearest(tmp_path: Path, text: str, parts: list[str]) -> None:
    assert_clean_message(error_for(tmp_path, text), CONFIG_FILENAME, *parts)


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        (
            "distributed:\n  max_retries: many\n",
            "distributed.max_retries",
            2,
            "expected an integer",
        ),
        ("distributed:\n  enabled: maybe\n", "distributed.enabled", 2, "expected true or false"),
        ("local:\n  max_parallel_jobs: 1.5\n", "local.max_parallel_jobs", 2, "expected an integer"),
        ("local:\n  max_parallel_jobs: 0\n", "local.max_parallel_jobs", 2, "at least 1"),
        ("local:\n  gpus: first\n", "local.gpus", 2, "list of GPU indexes"),
        ("distributed:\n  strategy: fastest\n", "distributed.strategy", 2, "'round_robin'"),
        (
            "distributed:\n  source_failure_threshold: 1.5\n",
            "distributed.source_failure_threshold",
            2,
            "at most 1",
        ),
        (
            "distributed:\n  source_failure_threshold: 0\n",
            "distributed.source_failure_threshold",
            2,
            "greater than 0",
        ),
        (
            "distributed:\n  source_failure_threshold: -0.1\n",
            "distributed.source_failure_threshold",
            2,
            "greater than 0",
        ),
        (
            "distributed:\n  min_jobs_for_failsafe: 0\n",
            "distributed.min_jobs_for_failsafe",
            2,
            "at least 1",
        ),
        (
            "distributed:\n  health_check_interval: 0\n",
            "distributed.health_check_interval",
            2,
            "greater than 0",
        ),
        (
            "distributed:\n  health_check_failure_threshold: -1\n",
            "distributed.health_check_failure_threshold",
            2,
            "at least 1",
        ),
        ("distributed:\n  max_retries: -1\n", "distributed.max_retries", 2, "at least 0"),
        ("disk:\n  check_interval: 0\n", "disk.check_interval", 2, "at least 1"),
        ("disk:\n  kill_below: lots\n", "disk.kill_below", 2, "expected a size"),
        ("disk:\n  warn_below: -5\n", "disk.warn_below", 2, "size"),
        ("disk:\n  kill_below: 2GB\n", "disk.kill_below", 2, "warn_below"),
        ("health:\n  max_memory_percent: 150\n", "health.max_memory_percent", 2, "at most 100"),
        ("health:\n  max_load_per_core: 0\n", "health.max_load_per_core", 2, "greater than 0"),
        ("distributed: [1, 2]\n", "distributed", 1, "expected a mapping"),
        (
            "distributed:\n  remotes:\n    local:\n      host: x\n",
            "distributed.remotes.local",
            3,
            "reserved",
        ),
        (
            "distributed:\n  remotes:\n    'bad name':\n      host: x\n",
            "distributed.remotes.bad name",
            3,
            "invalid source name",
        ),
        (
            "distributed:\n  remotes:\n    a:\n      port: 22\n",
            "distributed.remotes.a.host",
            3,
            "required key is missing",
        ),
        (
            "distributed:\n  remotes:\n    a:\n      host: x\n      type: lsf\n",
            "distributed.remotes.a.type",
            5,
            "'slurm'",
        ),
        (
            "distributed:\n  remotes:\n    a:\n      host: x\n      setup: [ok, 3]\n",
            "distributed.remotes.a.setup[1]",
            5,
            "expected a string",
        ),
    ],
)
def test_bad_values(tmp_path: Path, text: str, key: str, line: int, words: str) -> None:
    message = error_for(tmp_path, text)
    assert_clean_message(message, CONFIG_FILENAME, f"{key}: ", f"(line {line})", words)


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        "distributed:\n  max_retries: -1\n  strategy: x\nlocal:\n  max_parallel_jobs: 0\n",
    )
    assert_clean_message(message, "distributed.max_retries", "(line 2)", "(and 2 more problems)")


def test_a_typo_is_reported_before_the_missing_key_it_causes(tmp_path: Path) -> None:
    message = error_for(tmp_path, "distributed:\n  remotes:\n    a:\n      hots: x\n")
    assert_clean_message(message, "unknown key", "did you mean 'host'?", "line 4")


def test_the_init_template_writes_every_key_at_its_default() -> None:
    from importlib import resources

    import yaml
    from pydantic import BaseModel

    from hsm.spec.config import ProjectConfig

    text = (resources.files("hsm.cli") / "templates" / "hsm_config.yaml").read_text()
    data = yaml.safe_load(text)

    def missing(model: type[BaseModel], values: dict[str, object], where: str) -> list[str]:
        out = []
        for name, info in model.model_fields.items():
            key = f"{where}{name}"
            if name not in values:
                out.append(key)
                continue
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                value = values[name]
                assert isinstance(value, dict), key
                out += missing(sub, value, key + ".")
        return out

    assert missing(ProjectConfig, data, "") == []
    assert ProjectConfig.model_validate(data) == ProjectConfig()
