"""The saved run's file format: ``config.json`` beside the safetensors weights, and its migrations.

A saved model or checkpoint is a directory with ``config.json`` (the run configuration, strictly validated on
load), ``model.safetensors`` and, in training checkpoints, ``ema.safetensors``. This module owns the file names,
the format version and what older files are read as, so that the trainer and the checkpoint checks read and
write runs without importing the model façade (``model.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import LEGACY_OBJECTIVES, ModelConfig, RunConfig
from .errors import UserError
from .serialization import config_from_dict, config_to_dict, read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
EMA_WEIGHTS_NAME = "ema.safetensors"
FORMAT_VERSION = 1


def run_config_dict(model_config: ModelConfig, run_config: RunConfig | None) -> dict[str, Any]:
    """The JSON of config.json: the run config if there is one, else just the model."""
    if run_config is not None:
        return {"format_version": FORMAT_VERSION, **config_to_dict(run_config)}
    return {"format_version": FORMAT_VERSION, "model": config_to_dict(model_config)}


def migrate(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A config.json's JSON object (without its version) as the current classes read it: sections that moved are
    moved, and settings whose default changed since older files were written get the value those files were
    trained with. (Per-field changes of one config class use its ``ABSENT_KEY_VALUES`` instead,
    ``serialization.config_from_dict``.)"""
    if isinstance(data.get("model"), dict):
        migrate_model(data["model"], f"{where}:model")
    if isinstance(data.get("training"), dict):
        # Runs saved before the objective was a setting trained with the merged-window loss; the default is now
        # "auto", so name it for them (a resume must continue the same objective and its chain pool).
        data["training"].setdefault("objective", "markov")
        objective = data["training"]["objective"]
        if isinstance(objective, str):  # the names before the rename of "flow" to "linearised"
            data["training"]["objective"] = LEGACY_OBJECTIVES.get(objective, objective)
    return data


def migrate_model(model: dict[str, Any], where: str) -> dict[str, Any]:
    """A model section saved before the backbone was one ``kind``-tagged section: its ``unet`` and ``mlp`` keys (one of
    them null) become ``backbone``, tagged with the kind of the one given."""
    if "backbone" in model or not {"unet", "mlp"} & set(model):
        return model
    unet, mlp = model.pop("unet", None), model.pop("mlp", None)
    if (unet is None) == (mlp is None):
        raise UserError(
            f"{where}: a model config needs exactly one of 'unet' and 'mlp' (files before 'backbone'), got "
            f"{'both' if unet is not None else 'neither'}"
        )
    kind, section = ("unet", unet) if unet is not None else ("mlp", mlp)
    model["backbone"] = {"kind": kind, **section} if isinstance(section, dict) else section
    return model


def load_run_config(path: Path) -> tuple[ModelConfig, RunConfig | None]:
    """Read config.json strictly: the model config, and the full run config when training settings are present."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise UserError(
            f"{path}: format_version {version!r} is not {FORMAT_VERSION}; this is not a kuramoto-diffusion config"
        )
    if set(data) == {"model"}:
        model = migrate_model(data["model"], f"{path}:model") if isinstance(data["model"], dict) else data["model"]
        return config_from_dict(ModelConfig, model, where=f"{path}:model"), None
    run_config = config_from_dict(RunConfig, migrate(data, str(path)), where=str(path))
    return run_config.model, run_config
