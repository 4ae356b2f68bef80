"""Training: the DSM loss, the chain pool and the trainer."""

from .chain_pool import ChainPool, resimulate_states
from .loss import score_matching_loss
from .trainer import (
    MAX_SKIPPED_IN_A_ROW,
    Trainer,
    TrainingDiverged,
    default_pool_advance,
    default_pool_size,
)

__all__ = [
    "MAX_SKIPPED_IN_A_ROW",
    "ChainPool",
    "Trainer",
    "TrainingDiverged",
    "default_pool_advance",
    "default_pool_size",
    "resimulate_states",
    "score_matching_loss",
]
