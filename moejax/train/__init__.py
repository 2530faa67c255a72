"""Training: experiment config, optimisers, loss, train/eval steps, checkpoints, logs, plots."""
