import sys
from pathlib import Path

# daemon_world (a recorded store, catalog, keys, reference bundles, configs) sits beside these tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))
