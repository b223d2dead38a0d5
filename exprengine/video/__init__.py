"""Video: reading, writing, and the frame-by-frame editing pipeline."""
