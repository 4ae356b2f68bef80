"""bench/quality.py --run-dir: a benchmark model killed midway resumes to the model an uninterrupted run trains."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import quality  # noqa: E402 - bench/ is a folder of scripts, put on the path above
from kuramoto_diffusion.errors import UserError  # noqa: E402

BUDGET = dataclasses.replace(quality.BUDGETS["tiny"], train_steps=12)
CPU = torch.device("cpu")


def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_uninterrupted_model(tmp_path: Path) -> None:
    whole, _ = quality.train("fingerprints", "kuramoto-local", BUDGET, 0, CPU)
    run_dir = tmp_path / "run"
    quality.train("fingerprints", "kuramoto-local", BUDGET, 0, CPU, run_dir=run_dir, checkpoint_every=4)
    for later in ("step-00000008", "step-00000012"):  # as if killed between steps 4 and 8
        shutil.rmtree(run_dir / "checkpoints" / later)
    resumed, _ = quality.train("fingerprints", "kuramoto-local", BUDGET, 0, CPU, run_dir=run_dir, checkpoint_every=4)
    for (name, mine), theirs in zip(resumed.network.state_dict().items(), whole.network.state_dict().values()):
        assert torch.equal(mine, theirs), name
    with pytest.raises(UserError, match="holds another run"):
        quality.train("fingerprints", "kuramoto-local", BUDGET, 1, CPU, run_dir=run_dir, checkpoint_every=4)


def test_a_checkpoint_interval_below_one_is_refused_by_the_parser(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["quality.py", "--run-dir", "unused", "--checkpoint-every", "0"])
    with pytest.raises(SystemExit) as exit_info:
        quality.main()
    assert exit_info.value.code == 2
    assert "--checkpoint-every: must be ≥ 1, got 0" in capsys.readouterr().err
