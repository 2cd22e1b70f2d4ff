"""Training: the loss, the engine's step and epoch, one training phase, resume, DDP, acceleration."""
