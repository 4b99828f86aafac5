"""The package as users install it, not as an editable checkout: a wheel in a fresh venv, and a colcon workspace.

Each install starts the simulated graph from the install (its own modules, its own share/ data), and the
graph records an episode; each node executable that `ros2 run` would start comes up on the DDS graph.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from robot_runtime.bringup.graph import GRAPHS
from robot_runtime.episode import EpisodeStore
from robot_runtime.nodes.graph_client import SIM_NODES, SIM_TOPICS, GraphClient

from repo import ROOT

SOURCE = ["robot_runtime", "nodes", "improvement_loop", "launch", "config", "calibration", "models", "resource",
          "package.xml", "setup.py", "setup.cfg", "README.md"]
EXECUTABLES = sorted({spec.executable for make_graph, _ in GRAPHS.values() for spec in make_graph()})


def copy_source(destination: Path) -> Path:
    """The package's files as a fresh clone has them (no venv, no build outputs, no egg-info)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    destination.mkdir(parents=True)
    for name in SOURCE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        else:
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A fresh venv with only our wheel installed; its dependencies come from this venv's site-packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp),
                    str(copy_source(tmp / "src"))], check=True, capture_output=True)
    [wheel] = tmp.glob("robot_runtime-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # A plain path line: this venv's packages become importable, but none of its .pth hooks run (not its editable
    # finder for robot_runtime); the ROS libraries' LD_LIBRARY_PATH is inherited from this process.
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    return venv


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    """`colcon build` of the package in a fresh workspace; returns (install prefix, environment of a sourced one)."""
    workspace = tmp_path_factory.mktemp("colcon_ws")
    copy_source(workspace / "src" / "robot_runtime")
    colcon = Path(sys.executable).with_name("colcon")
    done = subprocess.run([colcon, "build"], cwd=workspace, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    prefix = workspace / "install" / "robot_runtime"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env = {"AMENT_PREFIX_PATH": str(prefix), "PYTHONPATH": str(site)}  # what `source install/setup.bash` sets
    return prefix, env


def imported_from(python, cwd: Path, env: dict | None = None) -> str:
    """Where `python` imports the package from, run outside the checkout (whose robot_runtime/ would shadow it)."""
    code = "import robot_runtime.nodes.recorder as m, robot_runtime.sim.rollout; print(m.__file__)"
    done = subprocess.run([python, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def transport_profile(python, cwd: Path, env: dict | None = None) -> Path:
    """The DDS profile the install's launchers hand their nodes (robot_runtime/bringup/transport.py)."""
    done = subprocess.run([python, "-m", "robot_runtime.bringup.transport"], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-2000:]
    path = Path(done.stdout.strip().partition("=")[2])
    assert path.is_file(), done.stdout
    return path


def run_graph_and_record(command: list, cwd: Path, env: dict | None = None) -> None:
    """Start the sim graph with `command` (a launcher), wait for it, run one operator episode, check it committed."""
    log_dir = cwd / "logs"
    launcher = subprocess.Popen([*command, "sim", "--log-dir", str(log_dir)], cwd=cwd,
                                env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = GraphClient("install_test_client")
    try:
        client.wait_for_graph(SIM_NODES, SIM_TOPICS, timeout=90)
        end, commit = client.run_episode(timeout=90)
        assert commit["episode_id"] == end["episode_id"]
        episode = EpisodeStore(cwd / "episodes").open(commit["episode_id"])
        assert episode.steps > 0 and episode.meta["extra"]["calibration"]["corner"]["width"] == 96
    except Exception:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(log_dir.glob("*.log")))
        raise AssertionError(f"graph from the install failed; node logs:\n{logs}") from None
    finally:
        client.close()
        launcher.terminate()
        launcher.wait(timeout=30)


def start_each_executable(bin_dir: Path, cwd: Path, env: dict | None = None) -> None:
    """Every node executable, started as `ros2 run` would with its graph's parameters, comes up (its parameter
    service answers) and keeps running until stopped."""
    import yaml

    processes, logs = {}, {}
    for _, (make_graph, config_file) in sorted(GRAPHS.items(), reverse=True):  # sim first, then robot
        for spec in make_graph():
            if spec.executable in processes:
                continue
            overrides = cwd / f"{spec.name}.params.yaml"
            overrides.write_text(yaml.safe_dump({spec.name: {"ros__parameters": spec.parameters}}))
            logs[spec.executable] = cwd / f"{spec.name}.log"  # a file, not a pipe nobody reads until the end
            with logs[spec.executable].open("wb") as log:
                processes[spec.executable] = subprocess.Popen(
                    [bin_dir / spec.executable, "--ros-args", "-r", f"__node:={spec.name}", "--params-file",
                     str(ROOT / "config" / config_file), "--params-file", str(overrides)],
                    cwd=cwd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    assert sorted(processes) == EXECUTABLES
    client = GraphClient("install_exec_client")
    try:
        for name in processes:
            try:
                client.wait_for_graph([name], timeout=60)
            except TimeoutError:
                raise AssertionError(f"{name} did not come up: {logs[name].read_text()[-2000:]}") from None
        time.sleep(1.0)
        assert {n: p.poll() for n, p in processes.items()} == dict.fromkeys(processes)
    finally:
        client.close()
        for process in processes.values():
            process.terminate()
        stuck = {}
        for name, process in processes.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                stuck[name] = logs[name].read_text()[-2000:]
        assert not stuck, f"did not stop within 30 s of SIGTERM: {stuck}"


def test_wheel_install_runs_its_own_modules_and_data(wheel_venv, tmp_path):
    python = wheel_venv / "bin" / "python"
    assert imported_from(python, tmp_path).startswith(str(wheel_venv))
    assert transport_profile(python, tmp_path).is_relative_to(wheel_venv)
    run_graph_and_record([wheel_venv / "bin" / "robot-runtime-launch"], tmp_path)


def test_wheel_install_starts_every_node_executable(wheel_venv, tmp_path):
    start_each_executable(wheel_venv / "bin", tmp_path)


def test_colcon_install_runs_from_the_install_space(colcon_install, tmp_path):
    prefix, env = colcon_install
    assert imported_from(sys.executable, tmp_path, env).startswith(str(prefix))
    assert transport_profile(sys.executable, tmp_path, env).is_relative_to(prefix)
    # `ros2 run robot_runtime <node>` looks in lib/robot_runtime: every executable is there.
    assert {p.name for p in (prefix / "lib" / "robot_runtime").iterdir()} >= set(EXECUTABLES)
    run_graph_and_record([sys.executable, "-m", "robot_runtime.bringup.launcher"], tmp_path, env)


def test_colcon_install_starts_every_node_executable(colcon_install, tmp_path):
    prefix, env = colcon_install
    start_each_executable(prefix / "lib" / "robot_runtime", tmp_path, env)


def test_launch_files_with_the_real_launch_tooling():
    launch = pytest.importorskip("launch", reason="the `launch` package is not on PyPI; a ROS 2 install has it")
    pytest.importorskip("launch_ros", reason="the `launch_ros` package is not on PyPI; a ROS 2 install has it")
    for graph in GRAPHS:
        path = ROOT / "launch" / f"{graph}.launch.py"
        source = launch.launch_description_sources.PythonLaunchDescriptionSource(str(path))
        description = source.get_launch_description(launch.LaunchContext())
        assert len(description.entities) == 1 + len(GRAPHS[graph][0]())
