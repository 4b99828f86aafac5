"""The systemd units in systemd/: each parses (systemd-analyze verify where systemd is installed), starts one of
this package's console scripts with flags it accepts, restarts on failure, waits for the network, runs as a
user in a working directory, and points at example files that exist in the repository."""
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from repo import ROOT

UNITS = sorted((ROOT / "systemd").glob("*.service"))
VENV = "/opt/robot_runtime/venv"   # where the units expect the install (README "Operations")
ETC = "/etc/robot_runtime/"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (systemd keys may repeat); '\\' continues a line."""
    sections: dict[str, dict[str, list[str]]] = {}
    current, pending = None, ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"{path.name}:{number}: not KEY=VALUE inside a [Section]: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def console_scripts() -> set[str]:
    setup = (ROOT / "setup.py").read_text()
    nodes = re.search(r"NODES = \[(.*?)\]", setup, re.S).group(1)
    return set(re.findall(r'f"([\w-]+) = \{PACKAGE\}', setup)) | set(re.findall(r'"(\w+)"', nodes))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_a_unit_restarts_on_failure_after_the_network_as_a_user(unit):
    u = parse_unit(unit)
    assert set(u) == {"Unit", "Service", "Install"}
    assert u["Unit"]["Description"][0]
    for key in ("After", "Wants"):
        assert "network-online.target" in " ".join(u["Unit"][key]).split()
    service = u["Service"]
    assert service["Restart"] == ["on-failure"] and service["User"][0] not in ("", "root")
    assert service["WorkingDirectory"][0].startswith("/")
    assert u["Install"]["WantedBy"] == ["multi-user.target"]
    for env_file in service.get("EnvironmentFile", []):  # each has a commented example here
        assert env_file.startswith("-" + ETC), "optional (-) and under /etc/robot_runtime"
        assert (ROOT / "systemd" / Path(env_file).name).is_file()


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_execstart_is_a_console_script_of_this_package_with_flags_it_takes(unit):
    [exec_start] = parse_unit(unit)["Service"]["ExecStart"]
    program, *args = shlex.split(exec_start)
    assert Path(program).parent == Path(VENV) / "bin" and Path(program).name in console_scripts()
    for arg in args:  # configs it points at are the repository's examples, copied to /etc/robot_runtime
        if arg.startswith(ETC) and arg.endswith(".yaml"):
            assert (ROOT / "config" / Path(arg).name).is_file(), f"{arg}: no config/{Path(arg).name} to copy"
    installed = str(Path(sys.executable).parent / Path(program).name)
    helped = subprocess.run([installed, *args, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr  # the help of the subcommand, if any
    usage = helped.stdout + subprocess.run([installed, "--help"], capture_output=True, text=True, timeout=120).stdout
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        assert flag in usage, f"{Path(program).name} does not take {flag}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_every_unit(tmp_path):
    """With the venv's path in place of /opt/robot_runtime/venv, so that systemd finds the programs."""
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(VENV, sys.prefix))
    done = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, tmp_path.glob("*.service")))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_the_ingest_server_uses_the_store_and_catalog_of_the_example_daemon_config():
    """The daemon (and the fleet page it serves) reads what the ingest server writes."""
    [exec_start] = parse_unit(ROOT / "systemd" / "robot-runtime-ingest.service")["Service"]["ExecStart"]
    args = shlex.split(exec_start)
    flags = dict(zip(args[1::2], args[2::2]))
    daemon = yaml.safe_load((ROOT / "config" / "daemon.yaml").read_text())
    assert (flags["--store"], flags["--catalog"]) == (daemon["store"], daemon["catalog"])
