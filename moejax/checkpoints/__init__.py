"""Checkpoints outside the training loop's own code: how a run's state is written and read
(store), what a workdir holds without restoring it (info, report), and dense-to-MoE upcycling
(upcycle: the pure transform; upcycle_workdir: a dense run's checkpoint into a new MoE run)."""
