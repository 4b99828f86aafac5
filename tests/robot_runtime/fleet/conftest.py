import sys
from pathlib import Path

# fleet_world (keys, episode stores, an ingest server) is shared with the workstation's fleet tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "improvement_loop" / "fleet"))
