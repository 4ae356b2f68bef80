"""config.json: the format the model and the trainer share (``config_file.py``), and what older files are read as."""

from __future__ import annotations

import json

import pytest

from kuramoto_diffusion.config import RunConfig, TrainConfig, angle_model_config, image_model_config
from kuramoto_diffusion.config_file import CONFIG_NAME, load_run_config, run_config_dict
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig


def _before_the_backbone_section(saved: dict) -> dict:
    """A config.json as written before the backbone was one kind-tagged section: "unet" and "mlp", one null."""
    model = saved["model"]
    backbone = model.pop("backbone")
    kind = backbone.pop("kind")
    model["unet"], model["mlp"] = (backbone, None) if kind == "unet" else (None, backbone)
    return saved


@pytest.mark.parametrize(
    "model_config",
    [
        image_model_config(KuramotoConfig(coupling="local"), 1, 16, "tiny"),
        angle_model_config(EuclideanConfig(), 3, "tiny"),
    ],
    ids=["unet", "mlp"],
)
@pytest.mark.parametrize("with_training", [False, True], ids=["model-only", "run"])
def test_a_file_with_the_old_unet_and_mlp_keys_loads_as_the_same_config(model_config, with_training, tmp_path):
    run_config = RunConfig(model=model_config, training=TrainConfig()) if with_training else None
    saved = run_config_dict(model_config, run_config)
    assert saved["model"]["backbone"]["kind"] == ("unet" if model_config.unet is not None else "mlp")
    path = tmp_path / CONFIG_NAME
    path.write_text(json.dumps(_before_the_backbone_section(saved)))
    loaded_model, loaded_run = load_run_config(path)
    assert loaded_model == model_config and loaded_model.backbone == model_config.backbone
    assert loaded_run == run_config


@pytest.mark.parametrize("unet, mlp, word", [({}, {}, "both"), (None, None, "neither")])
def test_an_old_file_with_both_or_neither_backbone_is_one_line_naming_it(unet, mlp, word, tmp_path):
    saved = run_config_dict(image_model_config(EuclideanConfig(), 1, 16, "tiny"), None)
    del saved["model"]["backbone"]
    saved["model"].update(unet=unet, mlp=mlp)
    path = tmp_path / CONFIG_NAME
    path.write_text(json.dumps(saved))
    with pytest.raises(
        UserError, match=f"^{path}:model: a model config needs exactly one of 'unet' and 'mlp'.*got {word}$"
    ):
        load_run_config(path)


def test_a_backbone_of_an_unknown_kind_names_the_kinds(tmp_path):
    saved = run_config_dict(image_model_config(EuclideanConfig(), 1, 16, "tiny"), None)
    saved["model"]["backbone"]["kind"] = "transformer"
    path = tmp_path / CONFIG_NAME
    path.write_text(json.dumps(saved))
    with pytest.raises(UserError, match="backbone.kind: 'transformer' is not one of 'unet', 'mlp'"):
        load_run_config(path)
