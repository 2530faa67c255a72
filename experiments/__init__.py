"""absl entry points: train, compare, bench and reproduction recipes (python -m experiments.NAME)."""
