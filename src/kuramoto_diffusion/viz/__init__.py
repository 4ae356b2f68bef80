"""Pictures: image grids, forward strips, plots and animations (images.py); flow fields (flows.py)."""
