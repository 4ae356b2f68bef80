"""Markov denoising score matching on the transition kernel (SPEC §3).

From a state x_s at step s, draw x' from the kernel of a stride of h steps,
x' = project(μ + σ z) with μ = transition_mean(x_s, s, h), σ = transition_scale(s, h),
and regress the network at query step s + h on the kernel's score:

    target  s* = ∂/∂x' log p(x' | x_s)
    loss       = E ‖ (F(x', s+h) − c·s*) · σ / |c| ‖²

where F predicts c(t)·score (``ForwardProcess.output_scale``). The factor σ/|c| gives the
regression target σ·s* unit variance whatever the stride. In expectation over x_s the
target is the marginal score at s + h, which is what the samplers need.

* Kuramoto: x_s comes from the chain pool at its step s; h is the DSM window (h = 1 is
  the paper's loss; larger h merges K and σ² over h fine steps, biased O(h)).
* Euclidean VP: strides are exact, so s = 0, x_0 is the data and h is uniform in 1 … T:
  the target c·s* is the noise ε and the loss is DDPM's usual ε-prediction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes import ForwardProcess
from ..nets.score import ScoreNetwork


def kernel_draw(
    process: ForwardProcess, x_start: Tensor, t_start: Tensor, stride: Tensor, noise: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One DSM example per row: (x', the target s* = ∂/∂x' log p(x' | x_s), the kernel scale σ).

    Always computed in the states' own precision, also inside an autocast region: the coupling's
    convolution and the wrapped-normal score lose their accuracy at small σ in bfloat16/float16.
    """
    with torch.autocast(device_type=x_start.device.type, enabled=False):
        mean = process.transition_mean(x_start, t_start, stride)
        scale = process.transition_scale(t_start, stride, like=x_start)
        x_next = process.project(mean + scale * noise)
        return x_next, process.kernel_score(x_next, mean, scale), scale


def score_matching_loss(
    network: ScoreNetwork,
    process: ForwardProcess,
    x_start: Tensor,
    t_start: Tensor,
    stride: Tensor,
    *,
    draws: int = 1,
    generator: torch.Generator | None = None,
    condition: Tensor | None = None,
    class_labels: Tensor | None = None,
    noise: Tensor | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Mean weighted DSM loss over ``draws`` kernel samples per starting state (a scalar tensor).

    ``noise`` (the standard normal z of each kernel draw, shaped like the repeated starting states)
    is drawn with ``generator`` unless given: data-parallel training draws it for the whole batch.
    With ``autocast_dtype`` (bfloat16, float16) only the network runs in mixed precision; the
    kernel draw, its score target and the loss stay in float32.
    """
    if draws > 1:
        x_start, t_start, stride = (v.repeat_interleave(draws, 0) for v in (x_start, t_start, stride))
        condition = condition.repeat_interleave(draws, 0) if condition is not None else None
        class_labels = class_labels.repeat_interleave(draws, 0) if class_labels is not None else None
    if noise is None:
        noise = torch.randn(x_start.shape, generator=generator, dtype=x_start.dtype, device=x_start.device)
    x_next, target, scale = kernel_draw(process, x_start, t_start, stride, noise)
    t_query = t_start + stride
    c = process.output_scale(t_query, like=x_next)
    device_type = x_next.device.type
    with torch.autocast(device_type=device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        prediction = network(x_next, process.network_time(t_query).to(x_next.device), condition, class_labels)
    return (((prediction.float() - c * target) * (scale / c.abs())) ** 2).mean()
