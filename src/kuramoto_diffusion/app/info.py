"""``kuramoto-diffusion info``: a run's, checkpoint's or model's config, step and prior."""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import list_checkpoints
from ..model import DiffusionModel
from ..nets import count_parameters
from ..processes import KuramotoProcess
from ..serialization import config_to_dict
from ..training.checkpointing import validate_checkpoint


def info_text(path: Path) -> str:
    """The config, step and prior of a run, checkpoint or model directory."""
    model = DiffusionModel.from_pretrained(path)
    checkpoint = getattr(model, "checkpoint_path", path)
    lines = [f"model directory: {checkpoint}"]
    state = checkpoint / "state.json"
    if state.is_file():  # a training checkpoint: checked whole, so damage is reported as resume reports it
        step, _ = validate_checkpoint(checkpoint)
        lines.append(f"step: {step}")
    if path.is_dir() and (path / "checkpoints").is_dir():
        lines.append(f"complete checkpoints: {', '.join(p.name for p in list_checkpoints(path)) or 'none'}")
    process = model.process
    if isinstance(process, KuramotoProcess):
        cfg = process.config
        lines.append(
            f"process: Kuramoto {cfg.coupling} coupling, T = {cfg.steps}, schedule {cfg.schedule}, "
            f"neighbourhood {cfg.neighbourhood}, padding {cfg.padding}"
        )
        low, high = cfg.coupling_range
        coupling = f"K = {high:g} every step" if cfg.coupling_shape == "constant" else f"K {low:g} → {high:g}"
        lines.append(f"regime: {coupling}, {cfg.coupling_norm} coupling norm, κ_ref = {cfg.ref_strength:g}")
        lines.append(f"prior: von Mises(ψ_ref = {cfg.ref_phase:g}, κ = {cfg.prior_concentration:.4f})")
    else:
        lines.append(f"process: Euclidean VP, T = {process.steps}; prior: N(0, I)")
    lines.append(f"network: {count_parameters(model.network):,} parameters")
    if model.config.class_names:
        lines.append(f"classes: {', '.join(model.config.class_names)} (sample with --class NAME [--guidance W])")
    lines.append("config:")
    payload = config_to_dict(model.run_config) if model.run_config is not None else config_to_dict(model.config)
    lines.append(json.dumps(payload, indent=2))
    return "\n".join(lines)
