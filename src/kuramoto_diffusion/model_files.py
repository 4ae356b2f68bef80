"""A model on disk: writing a model directory, and finding and loading one (a model directory, a training
checkpoint, a run directory's newest loadable checkpoint, or a shipped model by name).

The file names and ``config.json``'s format are ``config_file.py``'s; ``DiffusionModel.save_pretrained`` and
``.from_pretrained`` call ``save_pretrained`` and ``load_pretrained``. Nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import list_checkpoints, load_module_weights, newest_loadable, save_tensors
from .config_file import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME, load_run_config, run_config_dict
from .errors import UserError
from .serialization import write_json_atomic

if TYPE_CHECKING:
    from .model import DiffusionModel

PRETRAINED_ROOT = Path(__file__).parent / "pretrained"


def shipped_model_names() -> list[str]:
    """The names of the models shipped with the package (folders of ``pretrained/`` holding weights)."""
    if not PRETRAINED_ROOT.is_dir():
        return []
    return sorted(folder.name for folder in PRETRAINED_ROOT.iterdir() if (folder / WEIGHTS_NAME).is_file())


def save_pretrained(model: DiffusionModel, directory: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` (the network's current weights) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(model.network.state_dict(), directory / WEIGHTS_NAME)
    write_json_atomic(directory / CONFIG_NAME, run_config_dict(model.config, model.run_config))


def load_pretrained(model_class: type[DiffusionModel], path: str | Path, use_ema: bool) -> DiffusionModel:
    """The model at ``path`` (on the CPU), built as ``model_class``: a model directory, a training checkpoint, a run
    directory (its newest checkpoint that loads: a newer damaged one is skipped with a warning naming its file
    and the reason), or a shipped model by name when no such path exists. ``use_ema``: the EMA weights if saved."""
    path = Path(path)
    if not path.exists() and str(path) in shipped_model_names():
        path = PRETRAINED_ROOT / str(path)
    if not path.exists():
        names = ", ".join(shipped_model_names())
        raise UserError(f"{path}: no such checkpoint or run directory, nor a shipped model ({names}); check the path")
    if (path / WEIGHTS_NAME).is_file():
        return load_directory(model_class, path, use_ema)
    candidates = list_checkpoints(path)
    if not candidates:
        raise UserError(
            f"{path}: no {WEIGHTS_NAME} and no complete checkpoint under {path / 'checkpoints'}; "
            "train first or point to a checkpoint directory"
        )
    # stacklevel 4: the warning names the line that called DiffusionModel.from_pretrained
    _, model = newest_loadable(
        path, candidates, lambda checkpoint: load_directory(model_class, checkpoint, use_ema), "loaded", stacklevel=4
    )
    return model


def load_directory(model_class: type[DiffusionModel], path: Path, use_ema: bool) -> DiffusionModel:
    """The model of one directory holding ``config.json`` and weights (``ema.safetensors`` first if ``use_ema``)."""
    model_config, run_config = load_run_config(path / CONFIG_NAME)
    model = model_class(model_config, run_config=run_config)
    weights = path / EMA_WEIGHTS_NAME if use_ema and (path / EMA_WEIGHTS_NAME).is_file() else path / WEIGHTS_NAME
    load_module_weights(model.network, weights)
    model.checkpoint_path = path
    return model
