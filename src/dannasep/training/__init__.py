"""Training: one trainer for every model (loop, resume, DDP, objectives, validation)."""
