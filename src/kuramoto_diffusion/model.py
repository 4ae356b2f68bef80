"""A diffusion model: a forward process plus a score network, loadable with ``from_pretrained``.

A saved model is a directory with ``config.json`` (the full run configuration, strictly
validated on load) and ``model.safetensors`` (and, in training checkpoints, ``ema.safetensors``,
used for sampling when present); the file format is ``config_file.py``. Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from PIL import Image

from .checkpoint import list_checkpoints, load_module_weights, newest_loadable, save_tensors
from .codecs import AngleCodec, Codec, FlowCodec, ImageCodec, to_uint8
from .config import ModelConfig, RunConfig
from .config_file import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME, load_run_config, run_config_dict
from .errors import UserError
from .nets import MLP, UNet, UNetConfig
from .nets.score import ScoreNetwork, SplitScoreNetwork, state_features
from .processes import ForwardProcess, ProcessConfig, build_process
from .processes.base import ScoreFn
from .sampling.inpainting import check_inpainting_mask, format_size, inpaint_sweep
from .sampling.likelihood import LikelihoodResult, ode_log_likelihood
from .sampling.steps import Sampler
from .sampling.sweep import SampleResult, reverse_sweep
from .serialization import write_json_atomic


def build_network(config: ModelConfig) -> ScoreNetwork | SplitScoreNetwork:
    """The score network a model config describes: one backbone, or two for flow models with ``flow_networks="split"``."""
    if config.flow_networks == "split":
        phase_unet, real_unet = config.split_unet_configs()
        return SplitScoreNetwork(UNet(phase_unet), UNet(real_unet), periodic_channels=config.periodic_channels)
    backbone: nn.Module = UNet(config.backbone) if isinstance(config.backbone, UNetConfig) else MLP(config.backbone)
    return ScoreNetwork(backbone, periodic_channels=config.periodic_channels)


def build_codec(config: ModelConfig, process: ForwardProcess) -> Codec:
    """The codec of a model's data kind under its process (the process's periodic channels say which map)."""
    periodic = process.periodic_channels(config.channels) > 0
    if config.data_kind == "image":
        return ImageCodec.for_process(process)
    if config.data_kind == "flow":
        if config.flow is None:  # ModelConfig refuses a flow model without one; this keeps the types honest
            raise UserError("a flow model needs its flow normalisation")
        return FlowCodec(config.flow, polar=periodic)
    return AngleCodec(periodic=periodic)


class DiffusionModel:
    """A process and a network; ``sample`` generates, ``save_pretrained``/``from_pretrained`` persist."""

    def __init__(
        self,
        config: ModelConfig,
        network: ScoreNetwork | SplitScoreNetwork | None = None,
        run_config: RunConfig | None = None,
    ) -> None:
        self.config = config
        self.process: ForwardProcess = build_process(config.process)
        self.codec: Codec = build_codec(config, self.process)
        self.network = network if network is not None else build_network(config)
        # The full run configuration (data, training) travels with the weights for provenance.
        self.run_config: RunConfig | None = run_config
        # The directory the weights were loaded from (``from_pretrained``); None for a model built in memory.
        self.checkpoint_path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: torch.device | str) -> DiffusionModel:
        self.network.to(device)
        return self

    def with_process(self, process_config: ProcessConfig) -> DiffusionModel:
        """The same network under another process config (e.g. with a fitted prior κ)."""
        config = dataclasses.replace(self.config, process=process_config)
        return DiffusionModel(config, self.network, self.run_config)

    # ----- data <-> states ---------------------------------------------------------------
    def encode(self, data: Tensor) -> Tensor:
        """Data to process states: images through the process's map (phases a·x on the torus); angles as they are;
        flow velocities (B, 2, N, N) to (direction, normalised log speed) or to velocity / its RMS (Euclidean).

        Half-precision data are promoted to float32 first: phases near the seam and small kernel
        scales need more than float16's 11 bits.
        """
        if data.dtype in (torch.float16, torch.bfloat16):
            data = data.float()
        return self.codec.encode(data)

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        """States to data, and how many values were clipped (images) — angles come back wrapped to [-π, π),
        flows as velocities in the data's units."""
        return self.codec.decode(states)

    # ----- score ------------------------------------------------------------------------
    def score(
        self,
        x: Tensor,
        t_query: int,
        condition: Tensor | None = None,
        class_labels: Tensor | None = None,
        guidance: float = 1.0,
    ) -> Tensor:
        """The learned score ∂ log p_t(x)/∂x at query step t ∈ 1 … T (network output divided by c(t)).

        Classifier-free guidance with weight w, for class labels (B,) or a forecasting model's context
        features (``context_features``): s_∅ + w·(s_c − s_∅), where s_∅ is the score with the "no class" label
        or the all-zero "no context" condition. w = 0 is the unconditional model, w = 1 the conditional one,
        w > 1 sharpens the condition. On the torus both scores are tangent vectors at the same point θ (the
        network projects onto the tangent), so their combination is one too.
        """
        time = self.process.network_time(t_query).to(x.device).expand(x.shape[0])
        scale = self.process.output_scale(t_query, like=x)
        guided = class_labels is not None or (condition is not None and self.config.context_frames > 0)
        if not guided or guidance == 1.0:
            return self.process.constrain_score(x, t_query, self.network(x, time, condition, class_labels) / scale)
        both_conditions = both_labels = None  # each conditional row beside its unconditional twin
        if condition is not None:
            null_condition = torch.zeros_like(condition) if self.config.context_frames else condition
            both_conditions = torch.cat([condition, null_condition])
        if class_labels is not None:
            both_labels = torch.cat([class_labels, torch.full_like(class_labels, len(self.config.class_names))])
        both = self.network(torch.cat([x, x]), torch.cat([time, time]), both_conditions, both_labels)
        conditional_output, unconditional_output = both.chunk(2)
        guided_output = (unconditional_output + guidance * (conditional_output - unconditional_output)) / scale
        return self.process.constrain_score(x, t_query, guided_output)

    def class_labels(self, names: str | list[str], num: int) -> Tensor:
        """(num,) label indices for a class name (or one name per sample); unknown names are a UserError listing the known."""
        if not self.config.class_names:
            raise UserError(
                "this model is not class-conditional (trained without classes=True); drop class_name and guidance"
            )
        names = [names] * num if isinstance(names, str) else list(names)
        unknown = [name for name in names if name not in self.config.class_names]
        if unknown:
            raise UserError(f"unknown class {unknown[0]!r}; this model knows {', '.join(self.config.class_names)}")
        return torch.tensor([self.config.class_names.index(name) for name in names], dtype=torch.long)

    def context_features(self, previous: Tensor) -> Tensor:
        """A forecasting model's condition from the previous frames (B, F, 2, N, N) (velocities, oldest first):
        each frame's states as the network sees them ([cos φ, sin φ, a] or (v_x, v_y)/std), stacked along the
        channels, plus a channel of ones that tells "context given" from the all-zero "no context"."""
        frames = self.config.context_frames
        if not frames:
            raise UserError(
                "this model does not forecast (trained without context_frames); sample it without a context"
            )
        if previous.dim() != 5 or previous.shape[1] < frames or previous.shape[2:] != self.config.state_shape(1)[1:]:
            raise UserError(
                f"the context must hold at least {frames} frames of size {format_size(self.config.state_shape(1)[1:])}, "
                f"got {format_size(previous.shape[1:]) if previous.dim() == 5 else format_size(previous.shape)}"
            )
        previous = previous[:, -frames:]
        batch = previous.shape[0]
        states = self.encode(previous.flatten(0, 1))
        features = state_features(states, self.config.periodic_channels).reshape(batch, -1, *states.shape[2:])
        return torch.cat([features, torch.ones_like(features[:, :1])], dim=1)

    def _score_fn(
        self, class_labels: Tensor | None, guidance: float, condition: Tensor | None = None
    ) -> Callable[[slice], ScoreFn]:
        """rows -> the (guided) score function of those rows of the batch."""
        if class_labels is None and condition is None:
            if guidance != 1.0:
                raise UserError(
                    "guidance needs a class (class_name) or a forecasting context; without one the model "
                    "samples unconditionally"
                )
            return lambda rows: self.score
        if class_labels is not None and not self.config.class_names:
            raise UserError(
                "this model is not class-conditional (trained without classes=True); drop class_name and guidance"
            )
        if class_labels is None and guidance != 1.0 and not self.config.context_frames:
            raise UserError("guidance needs a class or a forecasting context; a field condition is not guided")

        def for_rows(rows: slice) -> ScoreFn:
            labels = None if class_labels is None else class_labels[rows]
            context = None if condition is None else condition[rows]
            return lambda x, t: self.score(
                x,
                t,
                condition=None if context is None else context.to(x.device),
                class_labels=None if labels is None else labels.to(x.device),
                guidance=guidance,
            )

        return for_rows

    # ----- sampling ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        sampler: str | Sampler = "sde",
        nfe: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        record_trajectory: bool = False,
        x_start: Tensor | None = None,
        start_step: int | None = None,
        class_labels: Tensor | None = None,
        guidance: float = 1.0,
        condition: Tensor | None = None,
    ) -> SampleResult:
        """Generate ``num`` states with a reverse sweep, in batches.

        Starts from the prior at t = T, or from ``x_start`` (states at ``start_step``, e.g. real
        data pushed forward for editing). Class-conditional models take ``class_labels`` (num,)
        (see ``class_labels()``) and a classifier-free ``guidance`` weight (see ``score``).
        A forecasting model takes ``condition`` (num, K, H, W) from ``context_features`` (see ``forecast``),
        guided like a class. Decode with ``self.decode``.
        """
        score_for_rows = self._score_fn(class_labels, guidance, condition)

        def sweep(x: Tensor, rows: slice, device_generator: torch.Generator | None) -> SampleResult:
            return reverse_sweep(
                self.process,
                score_for_rows(rows),
                x,
                sampler=sampler,
                nfe=nfe,
                start_step=start_step,
                generator=device_generator,
                record_trajectory=record_trajectory,
            )

        return self._sweep_in_batches(num, batch_size, x_start, generator, sweep)

    @torch.no_grad()
    def inpaint(
        self,
        images: Tensor,
        mask: Tensor,
        *,
        sampler: str | Sampler = "sde",
        nfe: int | None = None,
        resample: int = 1,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        record_trajectory: bool = False,
        class_labels: Tensor | None = None,
        guidance: float = 1.0,
    ) -> SampleResult:
        """Fill the region where ``mask`` is 1 so that it fits the known data where ``mask`` is 0
        (optionally towards a class: ``class_labels``, ``guidance``, see ``sample``).

        ``images``: (N, C, H, W) data in [-1, 1] (angle models: (N, D) angles in radians).
        ``mask``: 0/1 values, 1 (white) = to fill, 0 (black) = known, the convention of diffusers'
        inpainting pipelines, OpenCV and LaMa (RePaint's masks are the complement: pass ``1 - mask``);
        it has the images' number of axes, each of size 1 or the images' (e.g. (1, 1, H, W): one
        mask for all); a soft mask is an error — threshold it first, e.g. ``(mask > 0.5).float()``.
        An all-1 mask (nothing known) or an all-0 mask (nothing to fill) is allowed with a warning.
        Values of ``images`` under mask 1 are ignored (set to 0, mid grey /
        the reference phase, before the known data is pushed forward). Samples from the prior at
        t = T with ``inpaint_sweep``; ``resample`` r > 1 is RePaint's resampling and costs r times
        the NFE. The known region of the decoded result equals ``images`` (up to float rounding).
        """
        if not isinstance(images, Tensor) or not images.is_floating_point():
            raise UserError(f"images must be a floating-point tensor, got {type(images).__name__}")
        expected = self.config.state_shape(images.shape[0] if images.dim() else 1)
        if images.shape != expected:
            raise UserError(
                f"images of size {format_size(images.shape)} do not fit this model's data of size N×{format_size(expected[1:])}"
            )
        check_inpainting_mask(mask, images.shape, what="images")
        if bool((mask == 1).all()):
            warnings.warn(
                "the inpainting mask is all 1 (white = fill): nothing of the images is kept, "
                "so this samples new images",
                stacklevel=2,
            )
        elif bool((mask == 0).all()):
            warnings.warn(
                "the inpainting mask is all 0 (black = keep): there is nothing to fill, "
                "so the result is the input images",
                stacklevel=2,
            )
        known_mask = 1 - mask.to(device=images.device, dtype=images.dtype).expand(images.shape)
        known_data = torch.where(known_mask != 0, images, 0.0)
        if not bool(torch.isfinite(known_data).all()) or (
            self.config.data_kind == "image" and known_data.abs().max() > 1
        ):
            raise UserError("known images must be finite data values in [-1, 1]; scale pixels as value / 127.5 − 1")
        known = self.encode(known_data.to(torch.float32))

        score_for_rows = self._score_fn(class_labels, guidance)

        def sweep(x: Tensor, rows: slice, device_generator: torch.Generator | None) -> SampleResult:
            return inpaint_sweep(
                self.process,
                score_for_rows(rows),
                x,
                known[rows].to(x.device),
                known_mask[rows],
                sampler=sampler,
                nfe=nfe,
                resample=resample,
                generator=device_generator,
                record_trajectory=record_trajectory,
            )

        return self._sweep_in_batches(images.shape[0], batch_size, None, generator, sweep)

    def _sweep_in_batches(
        self,
        num: int,
        batch_size: int,
        x_start: Tensor | None,
        generator: torch.Generator | None,
        sweep: Callable[[Tensor, slice, torch.Generator | None], SampleResult],
    ) -> SampleResult:
        """Run ``sweep(states, rows, device generator)`` over batches of ``num`` starting states and join the results.

        The starting states are ``x_start`` rows, or prior samples drawn with ``generator`` on the CPU.
        """
        if num < 1:
            raise UserError(f"num must be ≥ 1, got {num}")
        if batch_size < 1:
            raise UserError(f"batch_size must be ≥ 1, got {batch_size}")
        self.network.eval()
        device = self.device
        results = []
        for first in range(0, num, batch_size):
            rows = slice(first, min(first + batch_size, num))
            if x_start is None:
                count = rows.stop - rows.start
                x = self.process.prior_sample(self.config.state_shape(count), generator=generator, device="cpu").to(
                    device
                )
            else:
                x = x_start[rows].to(device)
            results.append(sweep(x, rows, _device_generator(generator, device)))
        return _concatenate(results)

    def sample_images(self, num: int, **options: object) -> list[Image.Image]:
        """``sample`` (same keyword options) decoded to PIL images (images models only)."""
        from PIL import Image  # here only: loading a model needs no image library

        if self.config.data_kind != "image":
            raise UserError("sample_images needs an image model; use sample() and decode() for angle data")
        images, _ = self.decode(self.sample(num, **options).states)  # type: ignore[arg-type]  # **options: object, checked by sample() itself
        pixels = to_uint8(images)
        return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pixels]

    def log_likelihood(
        self,
        data: Tensor,
        *,
        nfe: int | None = None,
        probes: int = 2,
        exact_dimension_limit: int = 32,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
    ) -> LikelihoodResult:
        """log p_0 of ``data`` in data units, nats per sample, via the probability-flow ODE (``likelihood``).

        ``data``: images in [-1, 1] (dequantised 8-bit images for ``likelihood.bits_per_dim``), angles in
        radians, or flow velocities. The result is the states' log-density from ``ode_log_likelihood`` plus
        log|det ∂state/∂data| of the encoding (``encoding_log_jacobian``). Class-conditional models are
        evaluated unconditionally (the "no class" label); forecasting models need a context and are refused.
        ``nfe``: 2 per Heun interval (default 2T); ``probes``: Hutchinson's K above ``exact_dimension_limit``
        elements per sample (below it the divergence is exact).
        """
        if self.config.context_frames:
            raise UserError(
                "this model forecasts from previous frames; its likelihood needs a context, which is not supported"
            )
        if not isinstance(data, Tensor) or not data.is_floating_point():
            raise UserError(f"data must be a floating-point tensor, got {type(data).__name__}")
        expected = self.config.state_shape(data.shape[0] if data.dim() else 1)
        if data.shape != expected:
            raise UserError(
                f"data of size {format_size(data.shape)} do not fit this model's data of size N×{format_size(expected[1:])}"
            )
        if not bool(torch.isfinite(data).all()):
            raise UserError("the data hold NaN or infinite values; the log-likelihood needs finite data")
        null = torch.full((1,), len(self.config.class_names), dtype=torch.long) if self.config.class_names else None
        pieces = []
        for start in range(0, data.shape[0], batch_size):
            rows = data[start : start + batch_size].to(device=self.device, dtype=torch.float32)
            labels = None if null is None else null.expand(rows.shape[0]).to(self.device)

            def score(x: Tensor, t: int, labels: Tensor | None = labels) -> Tensor:
                return self.score(x, max(t, 1), class_labels=labels)  # the network is trained for t ≥ 1

            result = ode_log_likelihood(
                self.process,
                score,
                self.encode(rows),
                nfe=nfe,
                probes=probes,
                exact_dimension_limit=exact_dimension_limit,
                generator=generator,
            )
            pieces.append((result, self.encoding_log_jacobian(rows).to(torch.float64)))
        results = [result for result, _ in pieces]
        errors = [result.probe_standard_error for result in results]
        return LikelihoodResult(
            log_likelihood=torch.cat([result.log_likelihood + jacobian for result, jacobian in pieces]),
            prior_log_likelihood=torch.cat([result.prior_log_likelihood for result in results]),
            probe_standard_error=None if errors[0] is None else torch.cat(errors),  # type: ignore[arg-type]  # all pieces share one estimator: all None or none
            function_evaluations=results[0].function_evaluations,
            steps=results[0].steps,
        )

    def encoding_log_jacobian(self, data: Tensor) -> Tensor:
        """log|det ∂state/∂data| of ``encode`` per sample (N,): D·log a for images on the torus (θ = a·x,
        a = ``KuramotoConfig.phase_range``), 0 for Euclidean images and for angles; for flows, per pixel,
        −log|v| − log(|v| + ε) − log s (phase–amplitude: φ = atan2, a = (log(|v| + ε) − μ)/s) or −2·log σ_v (Euclidean)."""
        return self.codec.log_jacobian(data)

    @torch.no_grad()
    def forward_then_reverse(
        self,
        data: Tensor,
        start_step: int,
        *,
        sampler: str | Sampler = "sde",
        nfe: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        record_trajectory: bool = False,
        class_labels: Tensor | None = None,
        guidance: float = 1.0,
    ) -> SampleResult:
        """Push data (in data units) forward to ``start_step`` and generate back from there (SDEdit-like),
        optionally towards a class (``class_labels``, ``guidance``: see ``sample``)."""
        states = self.process.simulate(self.encode(data.to(torch.float32)), start_step, generator=generator)
        return self.sample(
            data.shape[0],
            sampler=sampler,
            nfe=nfe,
            generator=generator,
            batch_size=batch_size,
            record_trajectory=record_trajectory,
            x_start=states,
            start_step=start_step,
            class_labels=class_labels,
            guidance=guidance,
        )

    @torch.no_grad()
    def forecast(
        self,
        previous: Tensor,
        *,
        guidance: float = 1.0,
        sampler: str | Sampler = "sde",
        nfe: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
    ) -> Tensor:
        """The next velocity field (B, 2, N, N) after each run of previous frames (B, ≥F, 2, N, N) (the last F are
        used), sampled with classifier-free ``guidance`` w on the context (w = 0: unconditional, 1: conditional)."""
        condition = self.context_features(previous.to(device=self.device, dtype=torch.float32))
        result = self.sample(
            previous.shape[0],
            sampler=sampler,
            nfe=nfe,
            generator=generator,
            batch_size=batch_size,
            condition=condition,
            guidance=guidance,
        )
        return self.decode(result.states)[0]

    @torch.no_grad()
    def rollout(self, previous: Tensor, frames: int, **options: Any) -> Tensor:
        """``frames`` frames forecast autoregressively after ``previous`` (B, ≥F, 2, N, N): (B, frames, 2, N, N).

        Each forecast joins the context of the next; ``options`` are those of ``forecast``.
        """
        if frames < 1:
            raise UserError(f"a rollout needs at least 1 frame, got {frames}")
        history, forecasts = previous.to(device=self.device, dtype=torch.float32), []
        for _ in range(frames):
            forecasts.append(self.forecast(history, **options))
            history = torch.cat([history[:, 1:], forecasts[-1][:, None]], dim=1)
        return torch.stack(forecasts, dim=1)

    # ----- persistence ------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (the network's current weights)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(self.network.state_dict(), directory / WEIGHTS_NAME)
        write_json_atomic(directory / CONFIG_NAME, run_config_dict(self.config, self.run_config))

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
    ) -> DiffusionModel:
        """Load a model directory, a training checkpoint, a run directory (its newest checkpoint that loads: a newer
        damaged one is skipped with a warning naming its file and the reason), or a shipped model by name
        (``shipped_model_names()``, e.g. ``"textures-kuramoto-local-32"``) when no such path exists."""
        path = Path(path)
        if not path.exists() and str(path) in shipped_model_names():
            path = PRETRAINED_ROOT / str(path)
        if not path.exists():
            names = ", ".join(shipped_model_names())
            raise UserError(
                f"{path}: no such checkpoint or run directory, nor a shipped model ({names}); check the path"
            )
        if (path / WEIGHTS_NAME).is_file():
            return cls._load_directory(path, use_ema).to(device)
        candidates = list_checkpoints(path)
        if not candidates:
            raise UserError(
                f"{path}: no {WEIGHTS_NAME} and no complete checkpoint under {path / 'checkpoints'}; "
                "train first or point to a checkpoint directory"
            )
        _, model = newest_loadable(
            path, candidates, lambda checkpoint: cls._load_directory(checkpoint, use_ema), "loaded"
        )
        return model.to(device)

    @classmethod
    def _load_directory(cls, path: Path, use_ema: bool) -> DiffusionModel:
        model_config, run_config = load_run_config(path / CONFIG_NAME)
        model = cls(model_config, run_config=run_config)
        weights = path / EMA_WEIGHTS_NAME if use_ema and (path / EMA_WEIGHTS_NAME).is_file() else path / WEIGHTS_NAME
        load_module_weights(model.network, weights)
        model.checkpoint_path = path
        return model


PRETRAINED_ROOT = Path(__file__).parent / "pretrained"


def shipped_model_names() -> list[str]:
    """The names of the models shipped with the package (folders of ``pretrained/`` holding weights)."""
    if not PRETRAINED_ROOT.is_dir():
        return []
    return sorted(folder.name for folder in PRETRAINED_ROOT.iterdir() if (folder / WEIGHTS_NAME).is_file())


def _device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """Samplers draw noise on the model's device; a CPU generator seeds a device generator deterministically."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _concatenate(results: list[SampleResult]) -> SampleResult:
    first = results[0]
    trajectory = None
    if first.trajectory is not None:
        trajectory = [torch.cat([r.trajectory[i] for r in results]) for i in range(len(first.trajectory))]  # type: ignore[index]  # every piece was sampled with the same options: all have one
    weights = [r.states.shape[0] for r in results]
    order = [
        sum(w * r.order_parameter[i] for w, r in zip(weights, results)) / sum(weights)
        for i in range(len(first.order_parameter))
    ]
    return SampleResult(
        torch.cat([r.states for r in results]),
        first.steps,
        trajectory,
        order,
        first.function_evaluations,  # per sample: every batch runs the same sweep
        [sum(counts) for counts in zip(*(r.seam_crossings for r in results))],
    )
