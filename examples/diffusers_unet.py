"""Train a small diffusers UNet2DModel on texture crops under a Kuramoto process and sample it in a diffusers loop.

    pip install kuramoto-diffusion[diffusers]
    python examples/diffusers_unet.py [out.png]

The UNet (0.6 M parameters) is wrapped for phases with ``PeriodicUNet2DWrapper`` (cos/sin in, tangent
projection out) and trained for 200 steps of our denoising score matching loss (about a minute
on one CPU thread); then 8 images of 32×32 px are drawn with 50 reverse-SDE steps through
``KuramotoDiffusersScheduler`` and saved as one grid (default diffusers_samples.png). 200 steps
are far too few for good textures: expect noisy, blotchy samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import UNet2DModel

from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.data.textures import TextureSource
from kuramoto_diffusion.processes import KuramotoConfig
from kuramoto_diffusion.sampling.diffusers import KuramotoDiffusersScheduler, PeriodicUNet2DWrapper
from kuramoto_diffusion.training.chain_pool import resimulate_states
from kuramoto_diffusion.training.objectives import dsm_loss, kernel_example
from kuramoto_diffusion.viz.images import image_grid, save_image_atomic

IMAGE_SIZE = 32
PROCESS = KuramotoConfig(coupling="local", neighbourhood=5, steps=100)  # the shipped texture model's process


def build_network() -> PeriodicUNet2DWrapper:
    """A 3-level diffusers UNet without attention, 2 channels (cos θ, sin θ) in and (a, b) out."""
    unet = UNet2DModel(
        sample_size=IMAGE_SIZE,
        in_channels=2,
        out_channels=2,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    )
    return PeriodicUNet2DWrapper(unet)


def train(
    network: PeriodicUNet2DWrapper,
    scheduler: KuramotoDiffusersScheduler,
    train_steps: int,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """One-step DSM at uniform steps t ∈ 0 … T−1, states simulated from fresh crops for every batch."""
    process = scheduler.process
    codec = ImageCodec.for_process(process)  # pixels in [-1, 1] to phases θ = a·x and back
    textures = TextureSource(IMAGE_SIZE, split="train")
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network.train()
    for step in range(1, train_steps + 1):
        phases = codec.encode(textures.sample_batch(batch_size, generator))
        t_start = torch.randint(process.steps, (batch_size,), generator=generator)
        with torch.no_grad():
            states = resimulate_states(process, phases, t_start, generator)
        noise = torch.randn(states.shape, generator=generator)
        # one chain step from each state: the kernel's score is the regression target (SPEC §4)
        loss = dsm_loss(network, process, kernel_example(process, states, t_start, torch.ones_like(t_start), noise))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.3f}")
    network.eval()


@torch.no_grad()
def sample(
    network: PeriodicUNet2DWrapper,
    scheduler: KuramotoDiffusersScheduler,
    num_images: int,
    num_inference_steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Images in [-1, 1] from a diffusers-style loop: one network call and one ``step`` per timestep."""
    scheduler.set_timesteps(num_inference_steps)
    phases = scheduler.init_noise_sample(
        (num_images, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator
    )  # von Mises prior
    for t in scheduler.timesteps:
        output = network(scheduler.scale_model_input(phases, t), scheduler.network_time(t, phases))
        phases = scheduler.step(output, t, phases, generator=generator).prev_sample
    images, _ = ImageCodec.for_process(scheduler.process).decode(phases)  # phases in [-π, π) to pixels in [-1, 1]
    return images


def main(
    output: Path,
    train_steps: int = 200,
    batch_size: int = 16,
    num_images: int = 8,
    num_inference_steps: int = 50,
    seed: int = 0,
) -> None:
    torch.manual_seed(seed)  # the UNet's initial weights
    generator = torch.Generator().manual_seed(seed)
    scheduler = KuramotoDiffusersScheduler(process=PROCESS, sampler="sde")
    network = build_network()
    train(network, scheduler, train_steps, batch_size, generator)
    images = sample(network, scheduler, num_images, num_inference_steps, generator)
    save_image_atomic(image_grid(images, columns=4, upscale=2), output)
    print(f"wrote {num_images} samples ({num_inference_steps} steps) to {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("diffusers_samples.png"))
