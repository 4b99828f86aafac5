"""Where the repository and these test helpers are, for tests that run scripts or read source files."""
from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
ROOT = SUPPORT.parent.parent
