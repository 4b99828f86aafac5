"""The DDS transport every process of a robot graph starts with: config/fastdds.xml.

Fast DDS's default shared-memory segment is 512 KiB per participant. A camera frame larger than
that (640x480 rgb8 is 900 KiB) cannot go through shared memory, travels as fragmented UDP and,
best effort, is mostly lost between processes on the same computer (32% of 640x480 rgb8 frames
arrived, 14% at 1280x720; 100% with the profile: benchmarks/results/dds_frames). The shipped
profile keeps shared memory and UDP with an 8 MiB segment. The segment is the publisher's, so it
is the camera driver that needs it: both launchers give it to every node they start, and a driver
started some other way needs the same variable (`python -m robot_runtime.bringup.transport`
prints it).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from robot_runtime.resources import share_candidates

PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")
DEFAULT_RMW = "rmw_fastrtps_cpp"   # what rclpy loads when RMW_IMPLEMENTATION is not set


def profile_path() -> Path:
    """config/fastdds.xml of the checkout or the install; FileNotFoundError where the install lacks it (a
    missing profile would only make Fast DDS log an error and drop large frames again). Not
    resources.find_data_file: it would take a stray fastdds.xml in the working directory first."""
    candidates = [base / "fastdds.xml" for base in share_candidates("config")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"fastdds.xml: the DDS transport profile is in none of {[str(c) for c in candidates]}")


def transport_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to `env` so that its processes use the shipped profile: none where the
    middleware is not Fast DDS or a profile file is already chosen (a site's own, even empty)."""
    if (env.get("RMW_IMPLEMENTATION") or DEFAULT_RMW) not in FASTDDS_RMWS or PROFILE_VARIABLE in env:
        return {}
    return {PROFILE_VARIABLE: str(profile_path())}


def with_transport(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with transport_environment's additions."""
    return {**env, **transport_environment(env)}


def main() -> None:
    """Print the line a camera driver's environment needs (for a shell, a systemd unit or a launch file)."""
    print(f"{PROFILE_VARIABLE}={profile_path()}")


if __name__ == "__main__":
    main()
