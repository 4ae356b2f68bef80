"""Can the UNet carry an image's mean brightness to its output? (the Euclidean baseline's failure in quality.py)

    OMP_NUM_THREADS=2 python bench/groupnorm_dc.py

A randomly perturbed 'tiny' UNet gets inputs that differ only by a constant shift; the spread of the
output's spatial mean against the input's shows whether per-image brightness survives the final
GroupNorm. With one channel per group (the presets' groups = 32 on 16 channels) it does not.
"""
import torch
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig
from kuramoto_diffusion.settings import image_model_config
torch.manual_seed(0)
for preset, groups in (("tiny", 32), ("tiny", 4)):
    m = DiffusionModel(image_model_config(EuclideanConfig(), 1, 32, preset, groups=groups))
    with torch.no_grad():
        for p in m.network.parameters(): p.add_(torch.randn_like(p) * 0.2)
    x = torch.randn(64, 1, 32, 32)
    t = torch.full((64,), 0.5)
    shifts = torch.linspace(-2, 2, 64).reshape(64, 1, 1, 1)
    with torch.no_grad():
        out = m.network(x * 0.1 + shifts, t)
    dc = out.mean(dim=(1, 2, 3))
    corr = torch.corrcoef(torch.stack([dc, shifts.flatten()]))[0, 1]
    print(preset, "groups", groups, "corr(output mean, input mean) =", round(float(corr), 3), "output-mean spread", round(float(dc.std()), 4), "output std", round(float(out.std()), 3))
