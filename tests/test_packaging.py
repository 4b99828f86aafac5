"""Packaging: namespaced imports, registered node executables, launch files that match the graph."""
import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from robot_runtime.bringup.graph import GRAPHS

from repo import ROOT


def test_wheel_keeps_every_module_under_the_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("robot_runtime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"robot_runtime"}
    for folder, package in (("robot_runtime", "robot_runtime"), ("nodes", "robot_runtime/nodes"),
                            ("improvement_loop", "robot_runtime/improvement_loop")):  # every room, every module
        for source in (ROOT / folder).rglob("*.py"):
            assert f"{package}/{source.relative_to(ROOT / folder).as_posix()}" in names
    data = [n for n in names if ".data/data/share/robot_runtime/" in n]
    assert any(n.endswith("launch/sim.launch.py") for n in data) and any(n.endswith("package.xml") for n in data)
    assert any(n.endswith("resource_index/packages/robot_runtime") for n in names)
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for graph in GRAPHS.values():
        for spec in graph[0]():
            assert f"{spec.executable} = robot_runtime.nodes.{spec.executable}:main" in entry_points


# Python modules the robot half imports -> rosdep key; ROS packages (rclpy, *_msgs, ...) are their own key.
PYTHON_ROSDEP = {"numpy": "python3-numpy", "yaml": "python3-yaml", "cv2": "python3-opencv", "zmq": "python3-zmq",
                 "cryptography": "python3-cryptography"}
PIP_ONLY = {"zarr", "numcodecs", "av", "imagecodecs", "onnx", "onnxruntime", "mcap", "mujoco", "metaworld",
            "tensorrt", "cuda"}
ROS_PACKAGE = re.compile(r"^(rclpy|rcl_interfaces|ament_index_python|rosidl_runtime_py|launch|launch_ros"
                         r"|\w+_(msgs|srvs))$")


def robot_half_imports() -> set[str]:
    """Top-level names of every module imported (anywhere) by the robot library, the nodes and the launch files."""
    files = [*(ROOT / "robot_runtime").rglob("*.py"), *(ROOT / "nodes").rglob("*.py"), *(ROOT / "launch").glob("*.py")]
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "robot_runtime"
    assert root.find("export/build_type").text == "ament_python"
    setup_cfg = (ROOT / "setup.cfg").read_text()
    assert "install_scripts=$base/lib/robot_runtime" in setup_cfg  # where `ros2 run` looks


def test_package_xml_declares_what_the_robot_half_imports_and_nothing_else():
    """rosdep installs exactly what the code needs: every imported ROS package and system Python module is an
    exec_depend, every exec_depend is imported (or is the launch tooling), and the rest is pip-only by name."""
    declared = {e.text for e in ET.parse(ROOT / "package.xml").getroot().findall("exec_depend")}
    imports = robot_half_imports()
    needed = {PYTHON_ROSDEP[n] for n in imports if n in PYTHON_ROSDEP} | {n for n in imports if ROS_PACKAGE.match(n)}
    assert needed - declared == set(), "imported but not declared in package.xml"
    assert declared - needed == set(), "declared in package.xml but not imported"
    unknown = {n for n in imports - set(PYTHON_ROSDEP) - PIP_ONLY
               if not ROS_PACKAGE.match(n) and n not in sys.stdlib_module_names and n != "robot_runtime"}
    assert unknown == set(), "imported but neither in rosdep, nor pip-only, nor the standard library"


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_launch_file_builds_the_same_graph_as_the_local_launcher(graph):
    """launch/<graph>.launch.py and robot-runtime-launch both read robot_runtime.bringup.graph.GRAPHS[graph]."""
    tree = ast.parse((ROOT / "launch" / f"{graph}.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "launch_description"]
    assert [c.args[0].value for c in calls] == [graph]
    from robot_runtime.bringup.launcher import GraphProcesses

    local = GraphProcesses(graph)
    assert [(s.executable, s.name) for s in local.specs] == [(s.executable, s.name) for s in GRAPHS[graph][0]()]
    for spec in local.specs:
        command = local.command(spec, Path("overrides.yaml"))
        assert command[2] == f"robot_runtime.nodes.{spec.executable}" and f"__node:={spec.name}" in command
    assert local.params_file.name == GRAPHS[graph][1] and local.params_file.is_file()
