"""What a trained model is used for, one small module each, as functions of the model (the diffusers-pipeline /
EDM ``generate.py`` split): ``DiffusionModel`` holds the process, codec, network and config and offers the score;
these take it and run a job. ``DiffusionModel`` binds each as its method of the same name (``model.sample(16)`` is
``tasks.sample(model, 16)``), so a task's signature and docstring are written once.

- ``batches``: the shared machinery: guided score functions per batch rows, prior draws in batches, joined results
- ``generation``: ``sample``, ``forward_then_reverse`` (SDEdit-like editing), ``sample_images``
- ``inpainting``: ``inpaint`` (RePaint-style filling of a masked region)
- ``forecasting``: ``forecast`` and ``rollout`` of flow models trained with previous frames as context
- ``likelihood``: ``log_likelihood`` in data units (the states' ODE likelihood plus the encoding's log-Jacobian)

The modules import the model's type for annotations only, so ``model.py`` imports them without a cycle.
"""

from .forecasting import forecast, rollout
from .generation import forward_then_reverse, sample, sample_images
from .inpainting import inpaint
from .likelihood import log_likelihood

__all__ = ["forecast", "forward_then_reverse", "inpaint", "log_likelihood", "rollout", "sample", "sample_images"]
