"""Training the AU-conditioned generator (SPEC section 4): losses, the trainer, checkpoints."""
