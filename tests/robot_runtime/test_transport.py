"""The DDS transport profile the launchers give every node (robot_runtime/bringup/transport.py)."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from robot_runtime.bringup.launcher import GraphProcesses
from robot_runtime.bringup.transport import PROFILE_VARIABLE, profile_path, transport_environment

NS = {"dds": "http://www.eprosima.com"}


def test_the_profile_keeps_shared_memory_and_udp_with_a_segment_for_large_frames():
    root = ET.parse(profile_path()).getroot()
    descriptors = {d.findtext("dds:transport_id", namespaces=NS): d
                   for d in root.iterfind(".//dds:transport_descriptor", NS)}
    assert sorted(d.findtext("dds:type", namespaces=NS) for d in descriptors.values()) == ["SHM", "UDPv4"]
    [shm] = [d for d in descriptors.values() if d.findtext("dds:type", namespaces=NS) == "SHM"]
    assert int(shm.findtext("dds:segment_size", namespaces=NS)) >= 3 * 1280 * 720 * 2   # two 720p rgb8 frames
    participant = root.find(".//dds:participant", NS)
    assert participant.get("is_default_profile") == "true"
    assert {t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", NS)} == set(descriptors)


def test_fast_dds_without_a_chosen_profile_gets_the_shipped_one():
    assert transport_environment({}) == {PROFILE_VARIABLE: str(profile_path())}
    assert transport_environment({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}) == {PROFILE_VARIABLE: str(profile_path())}
    assert transport_environment({"RMW_IMPLEMENTATION": ""}) == {PROFILE_VARIABLE: str(profile_path())}


def test_a_site_profile_or_another_middleware_is_left_alone():
    assert transport_environment({PROFILE_VARIABLE: "/etc/site/fastdds.xml"}) == {}
    assert transport_environment({PROFILE_VARIABLE: ""}) == {}
    assert transport_environment({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {}


def test_the_local_launcher_starts_its_nodes_with_the_profile(monkeypatch):
    monkeypatch.delenv(PROFILE_VARIABLE, raising=False)
    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    assert GraphProcesses("robot").env[PROFILE_VARIABLE] == str(profile_path())
    assert GraphProcesses("robot", env={PROFILE_VARIABLE: "/site.xml"}).env[PROFILE_VARIABLE] == "/site.xml"


def test_the_module_prints_the_line_a_camera_driver_needs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "robot_runtime.bringup.transport"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{PROFILE_VARIABLE}={profile_path()}"
