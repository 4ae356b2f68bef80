"""Can the UNet carry an image's mean brightness to its output? (why the Euclidean baseline once failed)

    OMP_NUM_THREADS=2 python bench/groupnorm_dc.py [--out groupnorm_dc.json]

A randomly perturbed UNet of each preset gets inputs that differ only by a constant shift (−2 … 2);
the spread of the output's spatial mean, and its correlation with the shift, show whether per-image
brightness survives the output block (GroupNorm → SiLU → conv). With one channel per group (the old
presets' groups = 32 on 16 or 32 channels) it does not; the presets' groups now keep ≥ 4 channels per
group. Prints a table and writes bench/results/groupnorm_dc.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from common import print_table, write_json
from kuramoto_diffusion.config import image_model_config
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.nets import UNET_PRESETS
from kuramoto_diffusion.processes import EuclideanConfig


def mean_response(preset: str, groups: int | None, seed: int = 0) -> dict[str, float]:
    """Output-mean spread and correlation with the input's mean for a perturbed Euclidean UNet."""
    torch.manual_seed(seed)
    overrides = {} if groups is None else {"groups": groups}
    model = DiffusionModel(image_model_config(EuclideanConfig(), 1, 32, preset, **overrides))
    with torch.no_grad():
        for parameter in model.network.parameters():  # trained-like weights: the output layer starts at zero
            parameter.add_(torch.randn_like(parameter) * 0.2)
        shifts = torch.linspace(-2, 2, 64).reshape(64, 1, 1, 1)
        output = model.network(torch.randn(64, 1, 32, 32) * 0.1 + shifts, torch.full((64,), 0.5))
    means = output.mean(dim=(1, 2, 3))
    return {
        "output_mean_spread": float(means.std()),
        "correlation_with_input_mean": float(torch.corrcoef(torch.stack([means, shifts.flatten()]))[0, 1]),
        "output_std": float(output.std()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="groupnorm_dc.json", help="JSON file (a bare name goes into bench/results/)")
    args = parser.parse_args()
    rows = []
    for preset in ("tiny", "small"):
        for groups in (32, None):
            width = UNET_PRESETS[preset]["base_channels"]
            chosen = groups if groups is not None else UNET_PRESETS[preset]["groups"]
            rows.append(
                {
                    "preset": preset,
                    "groups": chosen,
                    "channels_per_group": width // min(chosen, width),
                    **mean_response(preset, groups),
                }
            )
    print_table(
        rows,
        ["preset", "groups", "channels_per_group", "output_mean_spread", "correlation_with_input_mean", "output_std"],
    )
    write_json(args.out, {"command": shlex.join(["python", "bench/groupnorm_dc.py", *sys.argv[1:]]), "rows": rows})


if __name__ == "__main__":
    main()
