"""``kuramoto-diffusion info``: a run's, checkpoint's or model's config, step and prior."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..checkpoint import list_checkpoints
from ..model import DiffusionModel
from ..nets import count_parameters
from ..processes import KuramotoProcess
from ..serialization import config_to_dict
from ..training.checkpointing import validate_checkpoint


def info_text(path: Path, *, show_all: bool = False) -> str:
    """The config, step and prior of a run, checkpoint or model directory: the settings that apply to this model
    (``applicable_settings``), or with ``show_all`` the full config as saved."""
    model = DiffusionModel.from_pretrained(path)
    checkpoint = model.checkpoint_path or path
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
        local = f", neighbourhood {cfg.neighbourhood}, padding {cfg.padding}" if cfg.coupling == "local" else ""
        lines.append(f"process: Kuramoto {cfg.coupling} coupling, T = {cfg.steps}, schedule {cfg.schedule}{local}")
        low, high = cfg.coupling_range
        coupling = f"K = {high:g} every step" if cfg.coupling_shape == "constant" else f"K {low:g} → {high:g}"
        norm = f", {cfg.coupling_norm} coupling norm" if cfg.coupling != "none" else ""
        lines.append(f"regime: {coupling}{norm}, κ_ref = {cfg.ref_strength:g}")
        von_mises = f"von Mises(ψ_ref = {cfg.ref_phase:g}, κ = {cfg.prior_concentration:.4f})"
        if cfg.prior == "relaxed":
            lines.append(f"prior: relaxed, {von_mises} moved {cfg.prior_relax_steps} chain steps at the t = T rates")
        elif cfg.prior == "forward-chain":
            lines.append(
                f"prior: forward-chain, the chain run from a common phase von Mises({cfg.prior_start_phase:.3f}, "
                f"κ = {cfg.prior_start_concentration:.3f}) plus deviations von Mises(0, κ = {cfg.prior_start_deviation:.3f})"
            )
        else:
            lines.append(f"prior: {von_mises}")
    else:
        lines.append(f"process: Euclidean VP, T = {process.steps}; prior: N(0, I)")
    lines.append(f"network: {count_parameters(model.network):,} parameters")
    if model.config.class_names:
        lines.append(f"classes: {', '.join(model.config.class_names)} (sample with --class NAME [--guidance W])")
    payload = config_to_dict(model.run_config) if model.run_config is not None else config_to_dict(model.config)
    if show_all:
        lines.append("config (every setting, as saved):")
    else:
        lines.append("config (the settings that apply to this model; --all for every one):")
        payload = applicable_settings(payload)
    lines.append(json.dumps(payload, indent=2))
    return "\n".join(lines)


# Settings that mean something only for some models: (section, key) → whether it applies, given the config.
def _local(process: dict[str, Any]) -> bool:
    return process.get("coupling") == "local"


_PROCESS_ONLY_IF = {"neighbourhood": _local, "kernel": _local, "padding": _local}
_IMAGE_DATA_KEYS = ("image_size", "channels", "flip", "on_bad_image", "classes", "lazy")


def applicable_settings(payload: dict[str, Any]) -> dict[str, Any]:
    """The saved config (a run's or a model's dict) without the settings that do not apply to it: local coupling's
    neighbourhood, kernel and padding under global coupling; unset (null) sections; flow-only settings for other
    data; the unit of angle files for other data; image-folder settings for angles and flows; class dropout
    without classes or context frames."""
    result = copy.deepcopy(payload)
    model = result.get("model", result)
    process = model.get("process", {})
    for key, applies in _PROCESS_ONLY_IF.items():
        if key in process and not applies(process):
            del process[key]
    kind = model.get("data_kind", "image")
    for key in [key for key, value in model.items() if value is None or value == []]:
        del model[key]
    if kind != "flow":
        model.pop("flow_networks", None)
        model.pop("context_frames", None)
    data = result.get("data")
    if isinstance(data, dict):
        if kind != "angle":
            data.pop("degrees", None)
        if kind != "image":
            for key in _IMAGE_DATA_KEYS:
                data.pop(key, None)
    training = result.get("training")
    conditional = bool(model.get("class_names")) or bool(model.get("context_frames"))
    if isinstance(training, dict) and not conditional:
        training.pop("class_dropout", None)
    return result
