import sys
from pathlib import Path

# fleet_world (keys, stores, servers, the census) sits beside these tests; the robot-side fleet tests use it too.
sys.path.insert(0, str(Path(__file__).resolve().parent))
