"""The Python blocks of the README and of the docs/ pages run as written, from a scratch folder (paths into the repository made absolute).

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


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # the README and every docs/ page


def readme_blocks(pages: list[Path] = PAGES) -> list[tuple[str, str, str]]:
    """(page name, marker or "", code) of every python block of the README and the docs/ pages, in order."""
    return [
        (page.name, marker.strip(), code)
        for page in pages
        for marker, code in BLOCK.findall(page.read_text(encoding="utf-8"))
    ]


SELECTED = [(page, code) for page, marker, code in readme_blocks() if "readme-diffusers-loop" not in marker]
BLOCKS = [code for _, code in SELECTED]
IDS = [f"{page.removesuffix('.md')}-block{index}" for index, (page, _) in enumerate(SELECTED)]


def test_the_readme_and_docs_have_their_python_blocks():
    pages = {page for page, _ in SELECTED}
    assert "README.md" in pages and len(pages) >= 3  # the README's own and the docs pages' blocks
    assert len(BLOCKS) >= 4
    assert all(old in "".join(BLOCKS) for old in BUDGET)  # the cut budget is still the docs'


@pytest.mark.slow  # minutes on 2 cores: the examples train, sample and inpaint with the small UNet
@pytest.mark.parametrize("code", BLOCKS, ids=IDS)
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
