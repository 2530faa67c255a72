"""Rematerialisation (model.remat): the same loss and gradients as keeping every activation, and
less compiled temporary memory. Recomputing a layer's forward pass reruns the same float32
operations on the same inputs, so the bound is tight: rtol 1e-6 of each array's largest entry.
"""

import jax
import numpy as np
from flax import nnx

from experiments.benchmarks import train_setup
from moejax.train.loss import total_loss
from moejax.train.step import model_outputs

OVERRIDES = dict(train_setup.SMOKE_OVERRIDES) | {"data.batch_size": 16, "data.seq_length": 64}


def loss_and_grads(model, batch, z_loss):
    def loss_fn(model):
        logits, targets, weights, stats = model_outputs(model, batch, deterministic=False)
        return total_loss(logits, targets, weights, stats, z_loss)[0]
    return nnx.value_and_grad(loss_fn)(model)


def test_remat_keeps_loss_and_gradients_and_cuts_temporaries():
    """Scanned layers (the default; the unrolled loop wraps the same function)."""
    results, temps = {}, {}
    for remat in ("none", "full", "save_dots"):
        config = train_setup.load_config("glam", OVERRIDES | {"model.remat": remat})
        setup = train_setup.build(config)
        results[remat] = nnx.jit(loss_and_grads, static_argnums=2)(
            setup.model, setup.batch, setup.z_loss)
        if remat != "save_dots":
            temps[remat] = setup.compile().memory_analysis().temp_size_in_bytes
    loss, grads = results["none"]
    for remat in ("full", "save_dots"):
        np.testing.assert_allclose(results[remat][0], loss, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(results[remat][1]), jax.tree.leaves(grads)):
            b = np.asarray(b)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    assert temps["full"] < temps["none"], temps
