"""Two checkpoints and training runs: what changed between two checkpoints, how far a run moved epoch by epoch,
the per-tensor statistics of a conversion, and converting chosen epochs in one go."""
