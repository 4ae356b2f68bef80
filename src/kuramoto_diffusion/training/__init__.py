"""Training: the DSM loss, the chain pool and the trainer."""

from .chain_pool import ChainPool, resimulate_states
from .loss import score_matching_loss
from .trainer import (
    MAX_SKIPPED_IN_A_ROW,
    Trainer,
    TrainingDiverged,
    default_pool_advance,
    default_pool_size,
    resolve_device,
    use_deterministic_algorithms,
)

__all__ = [
    "MAX_SKIPPED_IN_A_ROW",
    "ChainPool",
    "Trainer",
    "TrainingDiverged",
    "default_pool_advance",
    "default_pool_size",
    "resimulate_states",
    "resolve_device",
    "score_matching_loss",
    "use_deterministic_algorithms",
]
