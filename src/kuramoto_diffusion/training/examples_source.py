"""Training examples: batches of a ``BatchSource`` encoded as process states on the device, with their conditions.

The loop and the objectives see only (states, conditions); which kind of source and model (unconditional,
class-conditional, forecasting) made them is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..data.sources import BatchSource, LabelledSource, RowDecodingSource, SequenceSource
from ..errors import UserError
from ..runtime import DistributedContext
from .objectives import Conditioning


class Encoder(Protocol):
    """What turns data into process states and conditions (a ``DiffusionModel``)."""

    def encode(self, data: Tensor) -> Tensor: ...

    def context_features(self, previous: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class ExampleSource:
    """Draws encoded training batches from ``source``; every random draw comes from ``generator`` (the run's
    data generator), so a resumed run draws the same examples.

    ``context_frames``: the frames before each example that condition it (forecasting models; 0 for none).
    ``classes``: the examples carry class labels 0 … classes − 1 (class-conditional models; 0 for none).
    """

    source: BatchSource
    generator: torch.Generator
    device: torch.device
    context_frames: int = 0
    classes: int = 0

    @property
    def conditioning(self) -> Conditioning:
        """What the conditions of these examples are, for the objective."""
        if self.context_frames:
            return Conditioning("context")
        return Conditioning("labels", self.classes) if self.classes else Conditioning()

    def batch(self, encoder: Encoder, count: int, rows: slice | None = None) -> tuple[Tensor, Tensor | None]:
        """``count`` examples encoded by ``encoder`` as process states on the device, and their conditions: class
        labels (class-conditional models), the context features of the previous frames (forecasting models:
        the example is the frame after them), or None.

        ``rows``: the only rows this process will use. A source that can (a lazy folder) then decodes just
        those; the random draws are always the whole batch's, so every process agrees on them.
        """
        source, generator, frames = self.source, self.generator, self.context_frames
        if frames:
            if not isinstance(source, SequenceSource):
                raise UserError(
                    f"{source!r} holds no frame sequences; a forecasting model (context_frames "
                    f"{frames}) trains on flow data"
                )
            sequences = source.sample_sequences(count, frames + 1, generator).to(self.device)
            return encoder.encode(sequences[:, -1]), encoder.context_features(sequences[:, :-1])
        if self.classes:
            if isinstance(source, RowDecodingSource) and rows is not None:
                data, labels = source.sample_labelled_batch(count, generator, rows=rows)
            elif isinstance(source, LabelledSource):
                data, labels = source.sample_labelled_batch(count, generator)
            else:
                raise UserError(
                    f"{source!r} has no class labels; class-conditional training needs a folder of class subfolders"
                )
            return encoder.encode(data.to(self.device)), labels.to(self.device)
        if isinstance(source, RowDecodingSource) and rows is not None:
            batch = source.sample_batch(count, generator, rows=rows)
        else:
            batch = source.sample_batch(count, generator)
        return encoder.encode(batch.to(self.device)), None


def own_rows(context: DistributedContext, batch_size: int, grad_accum: int) -> slice:
    """The rows of a global batch of ``batch_size`` that this process trains on (all of them on one process)."""
    pieces = context.micro_batches(batch_size, grad_accum)
    return slice(pieces[0].start, pieces[-1].stop)
