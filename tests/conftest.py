import os
import random
import sys
from pathlib import Path

# Shared helpers (bundle, bag and episode factories, DDS feeders) import by name from tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

# Every test run talks DDS in its own domain so parallel runs (CI, a developer) never cross.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
