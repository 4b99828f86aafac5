"""Fitting a network: the training loops, DDP helpers (torchrun) and resumable training state.

May import `data`, `models` and `improvement_loop.recap`."""
