"""What a training data source can do, as runtime-checkable protocols: the trainer asks these, not the class.

- ``BatchSource``: random batches (every source: images, angles, tori, flows);
- ``LabelledSource``: batches with a class index per example (image sources; those without classes raise a
  ``UserError`` when asked);
- ``SequenceSource``: runs of consecutive frames (flows), for forecasting models;
- ``RowDecodingSource``: a source that decodes only the rows of a batch a process asks for (lazy image folders),
  so that data-parallel training decodes each example once.

A source satisfies them by having the methods (no base class); ``isinstance(source, LabelledSource)`` checks that
the methods exist, not their signatures (mypy checks those). All randomness comes from the ``generator`` passed:
the same generator state gives the same batch.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class BatchSource(Protocol):
    """Training data: random batches in data units, all randomness from the generator."""

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """(batch_size, ...) float32 examples (images in [-1, 1], angles in radians, velocities)."""
        ...


@runtime_checkable
class LabelledSource(BatchSource, Protocol):
    """A source whose examples carry a class index (class-conditional training)."""

    def sample_labelled_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``sample_batch``'s examples and their (batch_size,) int64 class indices."""
        ...


@runtime_checkable
class SequenceSource(BatchSource, Protocol):
    """A source of consecutive frames (forecasting: the frames before condition the one after)."""

    def sample_sequences(self, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
        """(batch_size, length, ...) float32: ``length`` consecutive frames per example."""
        ...


@runtime_checkable
class RowDecodingSource(LabelledSource, Protocol):
    """A source that decodes only ``rows`` of a batch (the others are zero); the random draws are always those of
    the whole batch, so every data-parallel process agrees on them."""

    decodes_rows_on_demand: ClassVar[Literal[True]]  # the marker isinstance sees (methods alone cannot tell)

    def sample_batch(self, batch_size: int, generator: torch.Generator, rows: slice | None = None) -> Tensor: ...

    def sample_labelled_batch(
        self, batch_size: int, generator: torch.Generator, rows: slice | None = None
    ) -> tuple[Tensor, Tensor]: ...


__all__ = ["BatchSource", "LabelledSource", "RowDecodingSource", "SequenceSource"]
