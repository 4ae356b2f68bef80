"""The test folders mirror the package's; their shared helpers (cli_runner.py, and fixtures that one test module
imports from another, e.g. ``from test_training import FixedImages``) import by module name from any folder."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
for folder in [
    TESTS,
    *sorted(path for path in TESTS.iterdir() if path.is_dir() and not path.name.startswith((".", "_"))),
]:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
