"""Training: the DSM loss, the chain pool and the trainer."""

from .chain_pool import ChainPool, resimulate_states
from .loss import score_matching_loss
from .trainer import Trainer, TrainingDiverged, default_pool_size, resolve_device

__all__ = ["ChainPool", "Trainer", "TrainingDiverged", "default_pool_size", "resimulate_states", "resolve_device", "score_matching_loss"]
