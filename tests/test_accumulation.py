"""Gradient accumulation (train.grad_accum_steps): N microbatches give the gradients, losses
and DeepSeek-V3 expert load of one batch N times larger.

Routing groups are whole sequences here (moe.group_size None), so every microbatch routes its
rows exactly as the big batch does and the two differ only by float32 summation order: the
bound is rtol 1e-5 (relative to each array's largest entry) for sums of a few thousand terms.
The batch has padding at row ends and unequal loss weights per microbatch, so weighting each
microbatch's mean equally would fail (the cross-entropy is the big batch's token mean).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments.benchmarks import train_setup
from moejax.errors import ConfigError
from moejax.routing.router import ExpertLoad
from moejax.train.loss import total_loss
from moejax.train.step import accumulated_grads, model_outputs

MICRO = dict(train_setup.SMOKE_OVERRIDES) | {"data.batch_size": 8, "model.num_layers": 2}


def setup(family, **overrides):
    config = train_setup.load_config(family, {**MICRO, **overrides})
    s = train_setup.build(config)
    batch = dict(s.batch)
    # padding at the ends of rows 1, 2 and 5, so the microbatches' loss weights differ
    ends = np.zeros((8, 32), bool)
    ends[1, 20:], ends[2, 5:], ends[5, 31:] = True, True, True
    batch["segment_ids"] = jnp.where(ends, 0, batch["segment_ids"])
    batch["loss_mask"] = jnp.where(ends, 0.0, batch["loss_mask"])
    return s, batch


def one_big_batch(model, batch, z_loss):
    def loss_fn(model):
        logits, targets, weights, stats = model_outputs(model, batch, deterministic=False)
        loss, parts = total_loss(logits, targets, weights, stats, z_loss)
        return loss, parts
    grads, parts = nnx.grad(loss_fn, has_aux=True)(model)
    return grads, parts


def assert_trees_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * max(np.abs(y).max(), 1e-30))


@pytest.mark.parametrize("n", [2, 4])
def test_microbatches_sum_to_the_big_batch_gradient(n):
    s, batch = setup("glam")
    big_grads, big_parts = nnx.jit(one_big_batch, static_argnums=2)(s.model, batch, s.z_loss)
    grads, parts, _ = nnx.jit(accumulated_grads, static_argnums=(2, 3))(
        s.model, batch, s.z_loss, n)
    assert_trees_close(grads, big_grads)
    for name in ("loss", "cross_entropy", "output_z_loss", "moe_aux_loss"):
        np.testing.assert_allclose(parts[name], big_parts[name], rtol=1e-5, err_msg=name)
    # equal weighting of the microbatches' means would differ: the weights are unequal
    w = np.asarray(batch["loss_mask"]).reshape(8 // n, n, 32).sum((0, 2))
    assert len(set(w.tolist())) > 1


def test_deepseek_load_is_the_whole_batchs():
    s, batch = setup("deepseek_v3", **{"moe.hidden_dim": 16, "moe.num_experts": 8,
                                       "model.num_moe_layers": 1})
    big = nnx.clone(s.model)
    nnx.jit(one_big_batch, static_argnums=2)(big, batch, s.z_loss)
    nnx.jit(accumulated_grads, static_argnums=(2, 3))(s.model, batch, s.z_loss, 4)
    loads = [jax.tree.leaves(nnx.state(m, ExpertLoad)) for m in (s.model, big)]
    assert loads[0] and all(np.asarray(a).sum() > 0 for a in loads[0])
    for a, b in zip(*loads):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_accumulation_is_one_line():
    from moejax.train.config import resolve
    config = train_setup.load_config("glam", {**MICRO, "train.grad_accum_steps": 3})
    with pytest.raises(ConfigError, match=r"train\.grad_accum_steps=3 must be an integer >= 1 "
                                          r"that divides data\.batch_size=8"):
        resolve(config, 300)


def test_train_step_with_accumulation_updates_like_one_big_batch():
    """Two optimizer steps (Adafactor) with N=2 against N=1 from the same start: the same
    parameters, to float tolerance."""
    from moejax.train.step import train_step
    a, batch = setup("glam")
    b = nnx.clone(a.model), nnx.clone(a.optimizer)
    for _ in range(2):
        ma = train_step(a.model, a.optimizer, batch, a.z_loss, 2)
        mb = train_step(b[0], b[1], batch, a.z_loss, 1)
    np.testing.assert_allclose(ma["cross_entropy"], mb["cross_entropy"], rtol=1e-5)
    assert_trees_close(nnx.state(a.model, nnx.Param), nnx.state(b[0], nnx.Param))


def test_accumulation_cuts_the_compiled_temporaries():
    """What accumulation is for: the compiled step's temporary memory (activations kept for
    the backward pass, mostly) shrinks with the microbatch; measured on CPU 297 → 74 MiB."""
    overrides = dict(train_setup.SMOKE_OVERRIDES) | {"data.batch_size": 64,
                                                     "data.seq_length": 128}
    temps = {}
    for n in (1, 4):
        config = train_setup.load_config("glam", overrides | {"train.grad_accum_steps": n})
        compiled = train_setup.build(config, abstract=True).compile()
        temps[n] = compiled.memory_analysis().temp_size_in_bytes
    assert temps[4] < 0.5 * temps[1], temps
