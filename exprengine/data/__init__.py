"""Data: the synthetic face world (`synthetic`), data sets for training."""
