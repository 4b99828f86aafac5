import os
import random
import sys
from pathlib import Path

# Shared helpers (bundle, bag and episode factories, DDS feeders) import by name from tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))


def own_domain_id() -> int:
    """A DDS domain for this test run and, under pytest-xdist, for each of its workers, so parallel runs (CI, a
    developer) and the workers of one run never see each other's nodes: the run's domain (ROS_DOMAIN_ID if set,
    else random) and, for worker gwN, the run's + N. Workers inherit the controller's environment, so they
    share its choice."""
    run = int(os.environ.get("ROS_DOMAIN_ID") or random.Random(os.getpid()).randint(1, 100))
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return run if worker is None else (run + int(worker.removeprefix("gw"))) % 233


os.environ["ROS_DOMAIN_ID"] = str(own_domain_id())
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
