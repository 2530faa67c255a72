"""Training: experiment config, optimisers, loss, train/eval steps, the loop, logs, plots
(checkpoint I/O and upcycling live in moejax.checkpoints)."""
