"""Training: the DSM objectives, the chain pool and the trainer."""

from .chain_pool import ChainPool, resimulate_states
from .failures import MAX_SKIPPED_IN_A_ROW, TrainingDiverged
from .objectives import DSMExample, Objective, build_objective, default_pool_advance, default_pool_size
from .trainer import Trainer

__all__ = [
    "MAX_SKIPPED_IN_A_ROW",
    "ChainPool",
    "DSMExample",
    "Objective",
    "Trainer",
    "TrainingDiverged",
    "build_objective",
    "default_pool_advance",
    "default_pool_size",
    "resimulate_states",
]
