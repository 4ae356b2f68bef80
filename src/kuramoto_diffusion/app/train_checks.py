"""Checks of a new run's request before anything is built (an empty or own --out, a process that fits the
data) and the Kuramoto settings the request passes to ``process_config``."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TypedDict

from ..config_file import CONFIG_NAME
from ..data import (
    DATA_CHOICES,
)
from ..errors import UserError
from ..processes import KuramotoConfig
from ..processes.kuramoto import CouplingNorm, CouplingShape
from ..processes.priors import PriorKind
from .train_request import TrainRequest

# What a run folder holds (training/trainer.py); a folder with other visible entries is someone else's.
RUN_ENTRIES = frozenset({CONFIG_NAME, "checkpoints", "samples", "tensorboard"})


def check_fresh_out(out: Path, data_spec: str) -> None:
    """--out of a fresh run: an empty or new folder, or a run folder (the trainer then refuses one with checkpoints);
    never a folder of other files, which the run would overwrite, nor a folder inside the image folder --data, where
    the run's sample grids would become training data."""
    from ..config import FLOW_PREFIX, is_angle_spec

    if data_spec not in DATA_CHOICES and not is_angle_spec(data_spec):
        data_path = Path(data_spec[len(FLOW_PREFIX) :] if data_spec.startswith(FLOW_PREFIX) else data_spec).expanduser()
        if data_path.is_dir():
            resolved_out, resolved_data = out.expanduser().resolve(), data_path.resolve()
            if resolved_out == resolved_data or resolved_data in resolved_out.parents:
                raise UserError(
                    f"{out}: is inside the --data folder {data_path}; the run's files (sample grids) would be "
                    "read as training data; put --out outside it"
                )
    if not out.is_dir():
        return  # new (created by the trainer) or not a folder (the trainer's check names it)
    foreign = sorted(
        entry.name for entry in out.iterdir() if not entry.name.startswith(".") and entry.name not in RUN_ENTRIES
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(
            f"{out}: is not empty and not a run folder (it holds {shown}); a new run would overwrite files "
            "there; pass a new or empty --out"
        )
    config = out / CONFIG_NAME
    if config.is_file():
        try:
            import json

            is_run = isinstance(json.loads(config.read_text(encoding="utf-8")).get("training"), dict)
        except (OSError, ValueError, AttributeError):
            is_run = False
        if not is_run:
            raise UserError(
                f"{config}: is not a run's config.json and a new run would overwrite it; pass a new or empty --out"
            )


REGIME_FLAGS = {
    "coupling_range": "--coupling-range",
    "coupling_shape": "--coupling-shape",
    "coupling_norm": "--coupling-norm",
    "ref_strength": "--ref-strength",
    "prior": "--prior",
    "prior_relax_steps": "--prior-relax-steps",
}


def kuramoto_regime(request: TrainRequest, process_name: str) -> dict[str, object]:
    """The Kuramoto regime settings of ``request`` that differ from KuramotoConfig's defaults, as ``process_config``
    keywords; a UserError naming the flags where the process is not a Kuramoto one."""
    regime = {name: getattr(request, name) for name in REGIME_FLAGS}
    regime["coupling_range"] = tuple(float(k) for k in regime["coupling_range"])
    changed = {name: value for name, value in regime.items() if value != getattr(KuramotoConfig, name)}
    if changed and not process_name.startswith("kuramoto-"):
        raise UserError(
            f"{', '.join(REGIME_FLAGS[name] for name in changed)} set(s) the Kuramoto coupling or prior; the {process_name} process "
            "has none: drop it or use --process kuramoto-local, kuramoto-global or kuramoto-none"
        )
    if "coupling_norm" in changed and process_name == "kuramoto-none":
        raise UserError(
            "--coupling-norm normalises a coupling, and --process kuramoto-none has none; drop --coupling-norm"
        )
    if request.prior == "auto" and request.no_fit_prior:
        raise UserError(
            "--prior auto chooses the prior at the prior fit, which --no-fit-prior turns off; drop "
            "--no-fit-prior or name the prior (--prior von-mises, relaxed or forward-chain)"
        )
    if "prior_relax_steps" in changed and request.prior not in ("relaxed", "auto"):
        raise UserError(
            f"--prior-relax-steps sets the relaxed prior, and --prior is {request.prior}; add --prior relaxed "
            "or drop --prior-relax-steps"
        )
    return changed


class KuramotoRegime(TypedDict, total=False):
    """``process_config``'s Kuramoto regime keywords (absent: the config's default)."""

    coupling_range: tuple[float, float]
    coupling_shape: CouplingShape
    coupling_norm: CouplingNorm
    ref_strength: float
    prior: PriorKind
    prior_relax_steps: int


def process_regime(request: TrainRequest, regime: Collection[str]) -> KuramotoRegime:
    """The settings ``regime`` (``kuramoto_regime``'s) names, from ``request`` as ``process_config`` takes them:
    --prior auto leaves the model's prior to the trainer, which resolves it at the prior fit (TrainConfig.prior)."""
    chosen = KuramotoRegime()
    if "coupling_range" in regime:
        low, high = request.coupling_range
        chosen["coupling_range"] = (float(low), float(high))
    if "coupling_shape" in regime:
        chosen["coupling_shape"] = request.coupling_shape
    if "coupling_norm" in regime:
        chosen["coupling_norm"] = request.coupling_norm
    if "ref_strength" in regime:
        chosen["ref_strength"] = request.ref_strength
    if "prior" in regime and request.prior != "auto":
        chosen["prior"] = request.prior
    if "prior_relax_steps" in regime:
        chosen["prior_relax_steps"] = request.prior_relax_steps
    return chosen


def check_process_fits_data(process_name: str, *, angles: bool, flows: bool) -> None:
    """The phase-amplitude process is for flows, and flows take it or the Euclidean baseline."""
    if flows and process_name not in ("phase-amplitude", "euclidean"):
        raise UserError(f"--process {process_name} does not model flows; use phase-amplitude (default) or euclidean")
    if not flows and process_name == "phase-amplitude":
        raise UserError(
            "--process phase-amplitude models flows; pass --data flows:PATH (see 'kuramoto-diffusion flows generate')"
        )


def check_angle_training_options(process_name: str, classes: bool) -> None:
    """Options that need images: local coupling (a spatial grid of neighbours) and classes (subfolders)."""
    if process_name == "kuramoto-local":
        raise UserError(
            "--process kuramoto-local couples neighbouring pixels and needs images; angle data has no spatial grid: "
            "use --process kuramoto-global (or euclidean)"
        )
    if classes:
        raise UserError("--classes needs a folder of images with one subfolder per class; angle data has no classes")
