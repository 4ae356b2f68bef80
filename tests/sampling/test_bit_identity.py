"""Behaviour snapshot: every sampler gives bit for bit the samples it gave when the snapshot was taken.

For a fixed small model per process (Kuramoto local and global coupling, Euclidean VP, phase–amplitude:
a tiny UNet with seeded initial weights, T = 12, no training) and every sampler the CLI offers (sde, ode,
ode-heun, pc, euler-maruyama on the uniform and the rho grid), plus SDEdit from a start step,
inpainting (with and without resampling), the diffusers-style ``DiffusionScheduler.step`` loop and the
probability-flow likelihood, and for the shipped pretrained models (a few samplers each), the SHA-256 of the resulting tensors (with the grid, the NFE and the seam
crossings) must equal the entry in ``bit_identity.json``.

``bit_identity.json`` is a BEHAVIOUR SNAPSHOT, not a reference computed independently: it was written by
running the code before the sampler refactor of issue 34 (reverse-step registry), so that refactors of
the samplers can prove they change no sample. Regenerate it only deliberately, when a change of the
samples is intended (or torch's kernels change the float bits, e.g. after a torch upgrade), and say so
in the commit message::

    OMP_NUM_THREADS=1 PYTHONPATH=src python tests/sampling/test_bit_identity.py --write

Everything runs on the CPU in one thread (set here), since a convolution's summation order, and so
its last bits, may depend on the thread count.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import kuramoto_diffusion
from kuramoto_diffusion.config import FlowNormalisation, flow_model_config, image_model_config
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, PhaseAmplitudeConfig, ProcessConfig
from kuramoto_diffusion.sampling.scheduler import DiffusionScheduler
from kuramoto_diffusion.sampling.sweep import Sampler, SampleResult

SNAPSHOT = Path(__file__).with_name("bit_identity.json")
STEPS = 12  # T of every process
NFE = 7  # fewer evaluations than steps, so strides > 1 occur (odd: a valid ode-heun count)
BATCH = 3
SIZE = 8  # image side

PROCESSES: dict[str, ProcessConfig] = {
    "kuramoto-local": KuramotoConfig(coupling="local", neighbourhood=3, steps=STEPS),
    "kuramoto-global": KuramotoConfig(coupling="global", steps=STEPS),
    "euclidean": EuclideanConfig(steps=STEPS),
    "euclidean-clip": EuclideanConfig(steps=STEPS, clip_denoised=True),
    "phase-amplitude": PhaseAmplitudeConfig(steps=STEPS),
}
# The CLI's sampler names (app/cli.py --sampler) and the pc sampler with non-default corrector settings.
SAMPLERS: dict[str, Sampler] = {
    f"{name}-{grid}": Sampler(name, grid=grid)
    for name in ("sde", "ode", "ode-heun", "pc", "euler-maruyama")
    for grid in ("uniform", "rho")
}
SAMPLERS["pc2-uniform"] = Sampler("pc", corrector_steps=2, snr=0.1)
SCHEDULER_SAMPLERS = ("sde", "ode", "ode-heun")
PRETRAINED = sorted(
    path for path in (Path(kuramoto_diffusion.__file__).parent / "pretrained").iterdir() if path.is_dir()
)
PRETRAINED_SAMPLERS = {
    "sde-uniform": Sampler("sde"),
    "ode-heun-rho": Sampler("ode-heun", grid="rho"),
    "pc-uniform": Sampler("pc"),
}


def _model(name: str) -> DiffusionModel:
    torch.manual_seed(0)
    process = PROCESSES[name]
    if process.kind == "phase-amplitude":
        config = flow_model_config(process, SIZE, FlowNormalisation(), "tiny")
    else:
        config = image_model_config(process, 1, SIZE, "tiny")
    model = DiffusionModel(config)
    model.network.eval()
    return model


def _digest(*tensors: torch.Tensor) -> str:
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(str(tuple(tensor.shape)).encode())
        hasher.update(str(tensor.dtype).encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


def _sweep_record(result: SampleResult) -> dict[str, object]:
    return {
        "states": _digest(result.states),
        "steps": list(result.steps),
        "nfe": result.function_evaluations,
        "seam_crossings": list(result.seam_crossings),
    }


def _data(model: DiffusionModel, seed: int) -> torch.Tensor:
    """Data in data units: images in [-1, 1], or velocity fields for flow models."""
    generator = torch.Generator().manual_seed(seed)
    shape = model.config.state_shape(BATCH)
    if model.config.data_kind == "flow":
        return torch.randn(shape, generator=generator)
    return torch.rand(shape, generator=generator) * 2.0 - 1.0


def _scheduler_states(model: DiffusionModel, process: ProcessConfig, sampler: str) -> torch.Tensor:
    """The diffusers-style loop: one network call and one ``DiffusionScheduler.step`` per timestep."""
    scheduler = DiffusionScheduler(process, sampler=sampler)
    scheduler.set_timesteps(NFE)
    x = scheduler.init_noise_sample(model.config.state_shape(BATCH), generator=torch.Generator().manual_seed(11))
    generator = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = model.network(scheduler.scale_model_input(x, t), scheduler.network_time(t, x))
            x = scheduler.step(output, t, x, generator=generator).prev_sample
    return x


def _cases() -> Iterator[tuple[str, Callable[[], dict[str, object]]]]:
    """(case id, a function computing its record); each case builds its own model, so cases are independent."""
    for process_name, process in PROCESSES.items():
        for sampler_name, sampler in SAMPLERS.items():

            def sample(process_name: str = process_name, sampler: Sampler = sampler) -> dict[str, object]:
                model = _model(process_name)
                result = model.sample(BATCH, sampler=sampler, nfe=NFE, generator=torch.Generator().manual_seed(1))
                return _sweep_record(result)

            yield f"{process_name}/sample/{sampler_name}", sample

        def sdedit(process_name: str = process_name) -> dict[str, object]:
            model = _model(process_name)
            result = model.forward_then_reverse(
                _data(model, 2), 8, sampler="ode-heun", nfe=5, generator=torch.Generator().manual_seed(3)
            )
            return _sweep_record(result)

        yield f"{process_name}/forward-then-reverse/ode-heun", sdedit

        for sampler_name, resample in (
            ("sde", 1),
            ("sde", 2),
            ("ode", 1),
            ("ode-heun", 1),
            ("pc", 1),
            ("euler-maruyama", 1),
        ):

            def inpaint(
                process_name: str = process_name, sampler_name: str = sampler_name, resample: int = resample
            ) -> dict[str, object]:
                model = _model(process_name)
                mask = torch.zeros(1, 1, SIZE, SIZE)
                mask[..., 2:6, 1:5] = 1.0  # fill a block, keep the rest
                result = model.inpaint(
                    _data(model, 4),
                    mask,
                    sampler=sampler_name,
                    nfe=NFE,
                    resample=resample,
                    generator=torch.Generator().manual_seed(5),
                )
                return _sweep_record(result)

            yield f"{process_name}/inpaint/{sampler_name}-resample{resample}", inpaint

        for sampler_name in SCHEDULER_SAMPLERS:

            def scheduled(
                process_name: str = process_name, process: ProcessConfig = process, sampler_name: str = sampler_name
            ) -> dict[str, object]:
                return {"states": _digest(_scheduler_states(_model(process_name), process, sampler_name))}

            yield f"{process_name}/scheduler/{sampler_name}", scheduled

        def likelihood(process_name: str = process_name) -> dict[str, object]:
            model = _model(process_name)
            result = model.log_likelihood(_data(model, 6), nfe=6, probes=2, generator=torch.Generator().manual_seed(7))
            return {
                "log_likelihood": _digest(result.log_likelihood, result.prior_log_likelihood),
                "steps": result.steps,
            }

        yield f"{process_name}/log-likelihood", likelihood

    for directory in PRETRAINED:
        for sampler_name, sampler in PRETRAINED_SAMPLERS.items():

            def shipped(directory: Path = directory, sampler: Sampler = sampler) -> dict[str, object]:
                model = DiffusionModel.from_pretrained(directory)
                result = model.sample(2, sampler=sampler, nfe=5, generator=torch.Generator().manual_seed(8))
                return _sweep_record(result)

            yield f"pretrained-{directory.name}/sample/{sampler_name}", shipped


CASES = dict(_cases())


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _snapshot() -> dict[str, object]:
    return json.loads(SNAPSHOT.read_text())


def test_snapshot_covers_every_case() -> None:
    recorded = _snapshot()["cases"]
    assert sorted(recorded) == sorted(CASES), "regenerate bit_identity.json deliberately (module docstring)"


@pytest.mark.parametrize("case", list(CASES))
def test_samples_are_bit_identical_to_the_snapshot(case: str, one_thread: None) -> None:
    snapshot = _snapshot()
    got = CASES[case]()
    expected = snapshot["cases"][case]
    assert got == expected, (
        f"{case} changed (snapshot taken with torch {snapshot['torch']}, running {torch.__version__}); "
        "if the change is intended, regenerate bit_identity.json (module docstring)"
    )


def _write() -> None:
    torch.set_num_threads(1)
    cases = {case: compute() for case, compute in CASES.items()}
    SNAPSHOT.write_text(json.dumps({"torch": torch.__version__, "cases": cases}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(cases)} cases to {SNAPSHOT}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {sys.argv[0]} --write   (regenerates the behaviour snapshot {SNAPSHOT.name})")
    _write()
