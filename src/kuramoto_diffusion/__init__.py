"""Kuramoto orientation diffusion: generative modelling on the torus."""

__version__ = "0.1.0"
