"""robot_runtime: on-robot runtime (ROS 2 nodes) and the workstation improvement loop.

Three source folders install under one namespace so that no generic name
(`nodes`, `models`) becomes a top-level module in site-packages:
  robot_runtime/    -> robot_runtime                  (robot-side library, no ROS, no torch)
  nodes/            -> robot_runtime.nodes            (thin rclpy nodes)
  improvement_loop/ -> robot_runtime.improvement_loop (workstation side, torch)
The same setup.py serves `pip install` and colcon (ament_python); setup.cfg puts
the node executables in lib/robot_runtime where `ros2 run` looks.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "robot_runtime"
SOURCES = {PACKAGE: "robot_runtime", f"{PACKAGE}.nodes": "nodes", f"{PACKAGE}.improvement_loop": "improvement_loop"}


def subpackages() -> list[str]:
    """Every package under the three source folders, so no room is left out of a wheel or a colcon install."""
    found = []
    for package, folder in SOURCES.items():
        found += [package] + [f"{package}.{sub}" for sub in find_packages(folder)]
    return found

NODES = ["sim_robot", "policy_node", "teleop_mux", "recorder", "scripted_operator", "teleop_device",
         "lifecycle_manager", "fleet_agent"]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="On-robot policy runtime and fleet self-improvement loop",
    python_requires=">=3.10",
    packages=subpackages(),
    package_dir=SOURCES,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/calibration", glob("calibration/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.md") + glob("models/*.json")),
    ],
    install_requires=["numpy", "PyYAML", "zarr>=3", "onnxruntime", "onnx", "av", "imagecodecs"],
    zip_safe=False,
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES]
        + [
            f"robot-runtime-launch = {PACKAGE}.bringup.launcher:main",
            f"robot-runtime-demo = {PACKAGE}.improvement_loop.demo:main",
            f"robot-runtime-train = {PACKAGE}.improvement_loop.cycle.cli:main",
            f"robot-runtime-episodes = {PACKAGE}.datatools.cli:main",
            f"robot-runtime-fleet = {PACKAGE}.fleet.cli:main",
            f"robot-runtime-calibrate = {PACKAGE}.nodes.calibrate:main",
            f"robot-runtime-ingest = {PACKAGE}.improvement_loop.fleet.ingest:main",
            f"robot-runtime-page = {PACKAGE}.improvement_loop.page.app:main",
            f"robot-runtime-daemon = {PACKAGE}.improvement_loop.daemon.cli:main",
        ],
    },
)
