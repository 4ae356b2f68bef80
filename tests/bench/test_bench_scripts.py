"""Every script in bench/ imports and parses --help: a refactor of the package that a script depends on (a moved
or renamed function) fails here, not in the next long benchmark run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(path for path in BENCH.glob("*.py") if path.name != "common.py")

# Runs each script as __main__ with --help in one interpreter (one torch import for all) and reports what each did.
HELP_ALL = """
import contextlib, io, json, runpy, sys
sys.path.insert(0, sys.argv[1])
report = {}
for path in sys.argv[2:]:
    sys.argv = [path, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        report[path] = "ran without exiting"
    except SystemExit as done:
        report[path] = "ok" if done.code in (0, None) and "usage:" in out.getvalue() else f"exit {done.code}"
    except Exception as error:
        report[path] = f"{type(error).__name__}: {error}"
print(json.dumps(report))
"""


def test_every_bench_script_imports_and_shows_its_help() -> None:
    assert {"quality.py", "chain_step.py", "train_throughput.py", "headline.py"} <= {path.name for path in SCRIPTS}
    for script in SCRIPTS:  # --help must not run a benchmark (and overwrite its results)
        assert "argparse" in script.read_text(), f"{script.name} takes no options"
    result = subprocess.run(
        [sys.executable, "-c", HELP_ALL, str(BENCH), *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCH.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {Path(path).name: outcome for path, outcome in report.items() if outcome != "ok"} == {}
    assert len(report) == len(SCRIPTS)
