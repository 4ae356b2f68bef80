"""``python -m kuramoto_diffusion``: the same as the ``kuramoto-diffusion`` command."""

import sys

from .app.cli import main

sys.exit(main())
