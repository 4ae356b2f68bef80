"""Sample the shipped texture model with a diffusers-style loop over ``KuramotoScheduler``.

    python examples/scheduler_loop.py [out.png]

Draws 8 images of 32×32 px with 25 reverse-SDE steps (a few seconds on a CPU) and saves them
as one grid (default samples.png).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.sampling.scheduler import KuramotoScheduler
from kuramoto_diffusion.viz.images import image_grid, save_image_atomic

PRETRAINED = "textures-kuramoto-local-32"  # a shipped model, loaded by name


def main(output: Path, num_images: int = 8, num_inference_steps: int = 25, seed: int = 0) -> None:
    model = DiffusionModel.from_pretrained(PRETRAINED)
    network = model.network.eval()
    scheduler = KuramotoScheduler(model.config.process, sampler="sde")
    scheduler.set_timesteps(num_inference_steps)

    generator = torch.Generator().manual_seed(seed)
    phases = scheduler.init_noise_sample(model.config.state_shape(num_images), generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            # The network returns c(t)·score at (θ, t/T); step divides by c(t) and takes one SDE step.
            network_output = network(scheduler.scale_model_input(phases, t), scheduler.network_time(t, phases))
            phases = scheduler.step(network_output, t, phases, generator=generator).prev_sample

    images, _ = model.decode(phases)  # phases in [-π, π) to pixel values in [-1, 1]
    save_image_atomic(image_grid(images, columns=4, upscale=2), output)
    print(f"wrote {num_images} samples ({num_inference_steps} steps) to {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("samples.png"))
