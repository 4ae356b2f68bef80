"""The README's Python blocks run as written, from a scratch folder (paths into the repository made absolute).

Only the training budget of the API example is cut (``train_steps=2000`` → 2): what is checked is that the
names, signatures and the order of calls work, not the samples. The diffusers loop has its own test
(``sampling/test_diffusers_conformance.py``), which also needs the optional diffusers install.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!--[^>]*-->\n)?```python\n(.*?)```", re.S)
BUDGET = {"train_steps=2000": "train_steps=2"}


def readme_blocks() -> list[tuple[str, str]]:
    """(marker or "", code) of every python block of the README, in order."""
    return [(marker.strip(), code) for marker, code in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))]


BLOCKS = [code for marker, code in readme_blocks() if "readme-diffusers-loop" not in marker]


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 4
    assert all(old in "".join(BLOCKS) for old in BUDGET)  # the cut budget is still the README's


@pytest.mark.slow  # minutes on 2 cores: the examples train, sample and inpaint with the small UNet
@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{index}" for index in range(len(BLOCKS))])
def test_readme_block_runs_as_written(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for old, new in BUDGET.items():
        code = code.replace(old, new)
    code = code.replace('"src/kuramoto_diffusion/', f'"{ROOT}/src/kuramoto_diffusion/')
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert len(namespace) > 1  # it defined something
    assert not any(name.startswith(".tmp") for name in os.listdir(tmp_path))  # no half-written output left behind
