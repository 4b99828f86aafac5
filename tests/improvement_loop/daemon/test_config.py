"""Config mistakes are refused with the key and what to write, by the loader and by the CLI (no traceback)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from daemon_world import write_config

from robot_runtime.improvement_loop.daemon.config import ConfigError, load_config

DAEMON = str(Path(sys.executable).with_name("robot-runtime-daemon"))


def test_the_shipped_example_loads():
    cfg = load_config(Path(__file__).parents[3] / "config" / "daemon.yaml")
    assert cfg.fleet.canary == ["robot-1"] and cfg.schedule.timezone == "Europe/Berlin"
    assert cfg.gate.rule == "one_sided_test" and cfg.training.launcher == []


def _broken(tmp_path, edit) -> Path:
    path = write_config(tmp_path / "daemon.yaml", tmp_path)
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
    (lambda d: d["gate"].update(episodes="many"), "gate.episodes must be an integer, not 'many'"),
    (lambda d: d["training"].update(launcher="torchrun"), "training.launcher must be a list of str"),
    (lambda d: d["schedule"].update(cron="every night"), "schedule.cron 'every night' is not a cron expression"),
    (lambda d: d["schedule"].update(timezone="Mars/Olympus"), "schedule.timezone 'Mars/Olympus' is not an IANA"),
    (lambda d: d.pop("fleet"), "missing key 'fleet'"),
    (lambda d: d["fleet"].update(canary=["r9"]), "fleet.canary names ['r9'], not in fleet.robots"),
    (lambda d: d["fleet"].update(robots=["../etc"], canary=[]), "robot '../etc' is not allowed"),
    (lambda d: d["gate"].update(rule="vibes"), "gate.rule 'vibes': one of"),
    (lambda d: d["training"].update(method="dagger"), "training.method 'dagger': one of"),
    (lambda d: d["training"].update(progress_min_confidence=0.2), "training.progress_min_confidence must be in"),
    (lambda d: d["gate"].update(tasks=["fly-v3"]), "gate.tasks ['fly-v3']"),
    (lambda d: d.update(page={"port": 70000}), "page.port must be in 0..65535, not 70000"),
    (lambda d: d.update(page={"colour": "blue"}), "unknown key page.'colour'"),
])
def test_mistakes_are_named(tmp_path, edit, message):
    path = _broken(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_the_cli_reports_a_bad_config_without_a_traceback(tmp_path):
    path = _broken(tmp_path, lambda d: d["schedule"].update(timezone="Nowhere/Land"))
    done = subprocess.run([DAEMON, "--config", str(path), "status"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "schedule.timezone 'Nowhere/Land' is not an IANA time zone" in done.stderr
    missing = subprocess.run([DAEMON, "--config", str(tmp_path / "nope.yaml"), "status"], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_the_page_off_loopback_without_a_token_stops_run_before_any_cycle(tmp_path):
    path = _broken(tmp_path, lambda d: d.update(page={"host": "0.0.0.0"}))
    env = {k: v for k, v in os.environ.items() if k != "ROBOT_RUNTIME_PAGE_TOKEN"}
    done = subprocess.run([DAEMON, "--config", str(path), "run"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "page: page bound to 0.0.0.0" in done.stderr and "needs a token" in done.stderr
