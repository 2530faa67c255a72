"""MoeLayer against naive per-token loops: outputs and gradients for every dispatch path.

The reference computes each token's output one slot (or one choice) at a time, with its own
expert FFN written out in jnp, so the gather/scatter, one-hot einsum and sorted-grouped paths
are each checked against an independent computation, gradients included.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from moejax import MoeConfig, MoeLayer, SoftMoeLayer
from moejax.experts import Experts, grouped_ffn
from moejax.grouped import grouped_matmul
from moejax.megablox import megablox_matmul
from moejax.routing import route

D = 8
ACT = {"relu": lambda h: jnp.maximum(h, 0.0),
       "gelu": lambda h: 0.5 * h * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3))),
       "silu": lambda h: h / (1 + jnp.exp(-h))}


def one_expert(w, e, v):
    """FFN of expert e on token rows v [..., D], written out without the library."""
    h = v @ w["wi"][e]
    if "wi_gate" in w:
        gate_act = ACT["gelu"] if w["activation"] == "geglu" else ACT["silu"]
        h = gate_act(v @ w["wi_gate"][e]) * h
    else:
        h = ACT[w["activation"]](h)
    return h @ w["wo"][e]


def every_expert(w, x):
    """[E, G, S, D]: each expert on every token, one expert at a time."""
    return jnp.stack([one_expert(w, e, x) for e in range(w["wi"].shape[0])])


def layer_weights(layer):
    w = {"router": layer.router.w[...], "wi": layer.experts.wi[...], "wo": layer.experts.wo[...],
         "activation": layer.cfg.activation}
    if hasattr(layer.experts, "wi_gate"):
        w["wi_gate"] = layer.experts.wi_gate[...]
    if hasattr(layer.router, "w_noise"):
        w["router_noise"] = layer.router.w_noise[...]
    return w


def route_from_weights(w, cfg, x, capacity, key=None):
    """The library's routing (tested on its own in test_routing.py) on x·W_g (and x·W_noise)."""
    extra = ({"w_noise": jnp.einsum("gsd,de->gse", x, w["router_noise"])}
             if "router_noise" in w else None)
    return route(cfg, jnp.einsum("gsd,de->gse", x, w["router"]), capacity=capacity, key=key,
                 extra_logits=extra)


def concrete_route(w, cfg, x, capacity, key=None):
    weights = {k: v for k, v in w.items() if k != "activation"}
    return jax.jit(route_from_weights, static_argnums=(1, 3))(weights, cfg, x, capacity, key)


def loop_with_plan(w, cfg, x, capacity):
    """y[g, s] = Σ over slots (e, c) holding token s of slot weight · FFN_e(x[g, s]).

    A Python loop over the slots reads which token sits in each (from concrete values) into a
    0/1 table; the slot weights are recomputed inside (traced) so gradients reach the router.
    """
    slot_token = np.asarray(concrete_route(w, cfg, x, capacity).plan.slot_token)
    g, s, _ = x.shape
    holds = np.zeros((g, s) + slot_token.shape[1:], np.float32)           # [G, S, E, C]
    for gi, e, c in np.ndindex(*slot_token.shape):
        if slot_token[gi, e, c] < s:
            holds[gi, slot_token[gi, e, c], e, c] = 1.0

    def fn(w, x):
        slot_weight = route_from_weights(w, cfg, x, capacity).plan.slot_weight
        token_weight = jnp.einsum("gsec,gec->gse", holds, slot_weight)    # [G, S, E]
        return jnp.einsum("gse,egsd->gsd", token_weight, every_expert(w, x))

    return fn


def loop_over_choices(w, cfg, x, key=None):
    """y[t] = Σ over the token's choices of gate · FFN_e(x[t]); nothing dropped."""
    a = concrete_route(w, cfg, x, None, key).assignment
    idx, valid = np.asarray(a.expert_index), np.asarray(a.valid)
    g, s, k = idx.shape
    choice = np.zeros((g, s, k, w["wi"].shape[0]), np.float32)           # [G, S, k, E]
    for gi, t, j in np.ndindex(g, s, k):
        if valid[gi, t, j]:
            choice[gi, t, j, idx[gi, t, j]] = 1.0

    def fn(w, x):
        gate = route_from_weights(w, cfg, x, None, key).assignment.gate
        token_weight = jnp.einsum("gske,gsk->gse", choice, gate)          # [G, S, E]
        return jnp.einsum("gse,egsd->gsd", token_weight, every_expert(w, x))

    return fn


def make(cfg, seed=0):
    return MoeLayer(cfg, D, rngs=nnx.Rngs(seed))


@nnx.jit(static_argnums=2)
def run(layer, x, deterministic=True):
    """One compiled forward pass (eager op-by-op dispatch is much slower on CPU)."""
    return layer(x, deterministic=deterministic)


def layer_and_grads(layer, x, probe, deterministic=True):
    """Output and gradients of Σ y·probe with respect to every parameter and the input."""
    def f(layer, x):
        y, _ = layer(x, deterministic=deterministic)
        return jnp.sum(y * probe), y

    (_, y), grads = nnx.jit(nnx.value_and_grad(f, argnums=(0, 1), has_aux=True))(layer, x)
    return y, grads


def reference_grads(fn, w, x, probe):
    trainable = {k: v for k, v in w.items() if k != "activation"}

    def f(trainable, x):
        y = fn({**trainable, "activation": w["activation"]}, x)
        return jnp.sum(y * probe), y

    (_, y), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(trainable, x)
    return y, grads


def assert_same_grads(layer_grads, ref_grads, rtol=2e-5, atol=2e-6):
    state_grads, x_grad = layer_grads
    ref_w, ref_x = ref_grads
    np.testing.assert_allclose(state_grads["router"]["w"][...], ref_w["router"], rtol, atol)
    for name in ("wi", "wo", "wi_gate"):
        if name in ref_w:
            np.testing.assert_allclose(state_grads["experts"][name][...], ref_w[name], rtol, atol)
    np.testing.assert_allclose(x_grad, ref_x, rtol, atol)


CAPACITY_CASES = [
    dict(router="top_k", num_selected_experts=1),
    dict(router="top_k", num_selected_experts=2, renormalize_gates=True, activation="geglu"),
    dict(router="top_k", num_selected_experts=2, gate_order="top_k_then_softmax",
         activation="swiglu", batch_prioritized=True),
    dict(router="expert_choice", capacity_factor=2.0, activation="gelu"),
    dict(router="expert_choice", capacity_factor=2.0, expert_choice_max_experts_per_token=1),
    dict(router="deepseek_v3", num_selected_experts=2, renormalize_gates=True,
         routed_scaling_factor=2.5, num_expert_groups=2, num_selected_groups=1),
    dict(router="dense"),
]


@pytest.mark.parametrize("dispatch", ["index", "einsum"])
@pytest.mark.parametrize("case", CAPACITY_CASES, ids=lambda c: c["router"] + str(len(c)))
def test_capacity_dispatch_matches_per_token_loop(dispatch, case):
    cfg = MoeConfig(num_experts=4, hidden_dim=6, dispatch=dispatch, min_capacity=1,
                    eval_capacity_factor=case.pop("capacity_factor", 1.0), **case)
    layer = make(cfg)
    x = jax.random.normal(jax.random.key(1), (2, 10, D))
    probe = jax.random.normal(jax.random.key(2), x.shape)
    capacity = layer.capacity(10, train=False)
    y, grads = layer_and_grads(layer, x, probe)
    w = layer_weights(layer)
    y_ref, ref_grads = reference_grads(loop_with_plan(w, cfg, x, capacity), w, x, probe)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-6)
    assert_same_grads(grads, ref_grads)


def test_capacity_drops_tokens_and_residual_gets_zero():
    """With capacity 1 per expert most tokens are dropped: their MoE output is exactly zero."""
    cfg = MoeConfig(num_experts=2, hidden_dim=6, min_capacity=0, eval_capacity_factor=0.1)
    layer = make(cfg)
    x = jax.random.normal(jax.random.key(3), (1, 12, D))
    y, stats = run(layer, x, True)
    served = np.abs(np.asarray(y)).sum(-1) > 0
    assert served.sum() == 2                                  # one slot per expert
    np.testing.assert_allclose(stats["dropped_fraction"], 10 / 12, rtol=1e-6)


@pytest.mark.parametrize("impl", ["blocks", "ragged_dot"])
@pytest.mark.parametrize("case", [
    dict(router="top_k", num_selected_experts=2, activation="swiglu"),
    dict(router="top_k", num_selected_experts=1),
    dict(router="gshard", num_selected_experts=2),
    dict(router="deepseek_v3", num_selected_experts=3, renormalize_gates=True,
         routed_scaling_factor=2.0),
    dict(router="noisy_top_k", num_selected_experts=2),
], ids=lambda c: c["router"])
def test_dropless_matches_per_token_loop(impl, case):
    cfg = MoeConfig(num_experts=5, hidden_dim=6, dispatch="dropless", grouped_matmul=impl,
                    block_size=4, **case)
    layer = make(cfg)
    x = jax.random.normal(jax.random.key(4), (3, 7, D))
    probe = jax.random.normal(jax.random.key(5), x.shape)
    w = layer_weights(layer)
    # GShard samples (in training): the reference uses the key the layer will draw next.
    key = nnx.clone(layer.rngs).routing() if cfg.router == "gshard" else None

    fn = loop_over_choices(w, cfg, x, key)
    y, grads = layer_and_grads(layer, x, probe, deterministic=cfg.router != "gshard")
    y_ref, ref_grads = reference_grads(fn, w, x, probe)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-6)
    assert_same_grads(grads, ref_grads)


def test_dropless_with_the_megablox_kernel_matches_per_token_loop():
    """The TPU kernel (interpreted off TPU) in the whole layer, Mixtral's routing."""
    test_dropless_matches_per_token_loop(
        "megablox", dict(router="top_k", num_selected_experts=2, activation="swiglu"))


@pytest.mark.parametrize("router,k", [("top_k", 1), ("top_k", 2), ("deepseek_v3", 2)])
def test_capacity_without_drops_equals_dropless(router, k):
    base = dict(num_experts=4, num_selected_experts=k, router=router, hidden_dim=6,
                renormalize_gates=router == "deepseek_v3")
    capacity_layer = make(MoeConfig(**base, eval_capacity_factor=4.0 / k))  # capacity = S
    dropless_layer = make(MoeConfig(**base, dispatch="dropless"))
    x = jax.random.normal(jax.random.key(6), (2, 16, D))
    y_cap, stats = run(capacity_layer, x, True)
    y_dropless, _ = run(dropless_layer, x, True)
    assert float(stats["dropped_assignment_fraction"]) == 0.0
    np.testing.assert_allclose(y_cap, y_dropless, rtol=1e-5, atol=1e-6)


def test_grouped_blocks_equal_ragged_dot_with_empty_experts_and_spare_rows():
    experts = Experts(4, D, 6, activation="swiglu", rngs=nnx.Rngs(0))
    w = experts.weights()
    x = jax.random.normal(jax.random.key(7), (23, D))
    sizes = jnp.array([5, 0, 11, 3], jnp.int32)                       # 4 spare rows at the end

    def ffn(w, x, impl):
        return grouped_ffn(w, x, sizes, "swiglu", jnp.float32, impl=impl, block_size=4)

    y_blocks, y_ragged = ffn(w, x, "blocks"), ffn(w, x, "ragged_dot")
    np.testing.assert_allclose(y_blocks, y_ragged, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(y_blocks[19:]), 0.0)
    ref = [one_expert({**w, "activation": "swiglu"}, e, x[r])
           for e, r in zip([0] * 5 + [2] * 11 + [3] * 3, range(19))]
    np.testing.assert_allclose(y_blocks[:19], jnp.stack(ref), rtol=1e-5, atol=1e-6)
    grad = jax.jit(jax.grad(lambda w, x, impl: jnp.sum(jnp.sin(ffn(w, x, impl))), (0, 1)),
                   static_argnums=2)
    for a, b in zip(jax.tree.leaves(grad(w, x, "blocks")), jax.tree.leaves(grad(w, x, "ragged_dot"))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


GROUPED_MATMULS = {"blocks": lambda x, w, sizes: grouped_matmul(x, w, sizes, 2),
                   "megablox": megablox_matmul}


@pytest.mark.parametrize("impl", GROUPED_MATMULS)
def test_grouped_matmul_and_its_gradients_against_a_numpy_loop(impl):
    """y[r] = x[r]·w[e(r)]; dx[r] = dy[r]·w[e(r)]ᵀ; dw[e] = Σ over e's rows of x[r]ᵀ·dy[r].
    blocks, with block_size 2: the windows are 16, 8, 4 and 2 rows: expert 0's 5 rows take one
    of 4 and a last one of 2 that reaches into expert 2's rows, which it must leave alone;
    expert 2's 19 take 16, 2 and a last 2. megablox (interpreted here) tiles the 31 rows as 32.
    Expert 1 owns none; the 4 spare rows give zeros, and get zero gradient."""
    keys = jax.random.split(jax.random.key(11), 3)
    sizes = np.array([5, 0, 19, 3])
    x = jax.random.normal(keys[0], (31, 4))                            # [N, K]
    w = jax.random.normal(keys[1], (4, 4, 3))                          # [E, K, M]
    dy = jax.random.normal(keys[2], (31, 3))
    matmul = GROUPED_MATMULS[impl]
    y, vjp = jax.vjp(lambda x, w: matmul(x, w, jnp.asarray(sizes, jnp.int32)), x, w)
    dx, dw = vjp(dy)
    xn, wn, dyn = (np.asarray(a, np.float64) for a in (x, w, dy))
    y_ref, dx_ref, dw_ref = np.zeros((31, 3)), np.zeros((31, 4)), np.zeros((4, 4, 3))
    owner = np.repeat(np.arange(4), sizes)
    for r, e in enumerate(owner):
        y_ref[r] = xn[r] @ wn[e]
        dx_ref[r] = dyn[r] @ wn[e].T
        dw_ref[e] += np.outer(xn[r], dyn[r])
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(dw[1]), 0.0)


def test_grouped_matmul_in_bfloat16_keeps_dtypes_and_follows_float32():
    """bf16 rows and weights: y, dx, dw come back in bf16 (dw summed in float32), within bf16
    rounding of the float32 computation."""
    keys = jax.random.split(jax.random.key(12), 3)
    sizes = jnp.array([7, 0, 12], jnp.int32)
    x, w = jax.random.normal(keys[0], (20, 8)), jax.random.normal(keys[1], (3, 8, 5))
    dy = jax.random.normal(keys[2], (20, 5))

    def run(dtype):
        y, vjp = jax.vjp(lambda x, w: grouped_matmul(x, w, sizes, 4),
                         x.astype(dtype), w.astype(dtype))
        return (y, *vjp(dy.astype(dtype)))

    low, full = run(jnp.bfloat16), run(jnp.float32)
    assert [a.dtype for a in low] == [jnp.bfloat16] * 3
    for a, b in zip(low, full):
        np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=0.05, atol=0.1)


def test_shared_experts_add_an_always_on_ffn():
    cfg = MoeConfig(num_experts=4, num_selected_experts=2, hidden_dim=6, num_shared_experts=2,
                    shared_hidden_dim=3, eval_capacity_factor=2.0)
    layer = make(cfg)
    x = jax.random.normal(jax.random.key(8), (2, 8, D))
    y, _ = run(layer, x, True)
    shared = {"wi": layer.shared_experts.wi[...], "wo": layer.shared_experts.wo[...],
              "activation": "relu"}
    assert shared["wi"].shape == (1, D, 6)                            # 2 experts of width 3
    w = layer_weights(layer)
    routed = loop_with_plan(w, cfg, x, layer.capacity(8, train=False))(w, x)
    expected = routed + one_expert(shared, 0, x)
    np.testing.assert_allclose(y, expected, rtol=2e-5, atol=2e-6)


def test_jitter_touches_only_the_router_input():
    """With one expert the gate is always 1, so the output must be the expert on the clean input."""
    cfg = MoeConfig(num_experts=1, hidden_dim=6, jitter_eps=0.5, capacity_factor=1.0)
    layer = make(cfg)
    x = jax.random.normal(jax.random.key(10), (2, 6, D))
    y, _ = run(layer, x, False)
    w = layer_weights(layer)
    expected = one_expert(w, 0, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    # and the router does see jittered inputs
    key = jax.random.key(11)
    logits, _ = layer.router(x, key)
    noise = jax.random.uniform(key, x.shape, jnp.float32, 0.5, 1.5)
    np.testing.assert_allclose(logits, jnp.einsum("gsd,de->gse", x * noise, w["router"]),
                               rtol=1e-5, atol=1e-6)


def test_train_and_eval_capacity_factors():
    cfg = MoeConfig(num_experts=4, capacity_factor=1.25, eval_capacity_factor=2.0, min_capacity=1)
    layer = make(cfg)
    assert layer.capacity(64, train=True) == 20
    assert layer.capacity(64, train=False) == 32
    layer.eval()
    assert layer.deterministic


def test_expert_dropout_only_in_training():
    cfg = MoeConfig(num_experts=2, hidden_dim=32, expert_dropout=0.5, eval_capacity_factor=2.0,
                    capacity_factor=2.0)
    layer = make(cfg)
    x = jax.random.normal(jax.random.key(12), (1, 8, D))
    y_eval1, _ = run(layer, x, True)
    y_eval2, _ = run(layer, x, True)
    y_train, _ = run(layer, x, False)
    np.testing.assert_array_equal(y_eval1, y_eval2)
    assert not np.allclose(y_train, y_eval1)


def test_bfloat16_experts_keep_a_float32_router():
    f32 = make(MoeConfig(num_experts=4, hidden_dim=16))
    bf16 = make(MoeConfig(num_experts=4, hidden_dim=16, dtype="bfloat16"))
    x = jax.random.normal(jax.random.key(13), (2, 8, D))
    logits, _ = bf16.router(x.astype(jnp.bfloat16))
    assert logits.dtype == jnp.float32
    y32, s32 = run(f32, x, True)
    y16, s16 = run(bf16, x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_array_equal(s32["expert_counts"], s16["expert_counts"])
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=5e-2, atol=5e-2)


def test_switch_reduced_init_scale_shrinks_expert_weights():
    small = make(MoeConfig(num_experts=4, hidden_dim=512, expert_init_scale=0.1))
    std = float(jnp.std(small.experts.wi[...]))
    # truncated normal with variance 0.1 / fan_in (fan_in = D)
    assert abs(std - np.sqrt(0.1 / D)) < 0.1 * np.sqrt(0.1 / D)


def soft_moe_loop(phi, scale, w, x, slots_per_expert):
    """Soft MoE one slot and one token at a time (Puigcerver et al. 2023, section 2)."""
    g, s, d = x.shape
    n = phi.shape[1]
    phi_n = np.asarray(phi) / np.sqrt((np.asarray(phi) ** 2).sum(0, keepdims=True) + 1e-6)
    out = np.zeros_like(np.asarray(x))
    for gi in range(g):
        xs = np.asarray(x[gi])
        xn = xs / np.sqrt((xs ** 2).sum(-1, keepdims=True) + 1e-6)
        logits = xn @ (float(scale) * phi_n)                                  # [S, n]
        dispatch = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)      # over tokens
        combine = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)       # over slots
        slot_out = []
        for j in range(n):
            slot_in = sum(dispatch[t, j] * xs[t] for t in range(s))
            slot_out.append(np.asarray(one_expert(w, j // slots_per_expert, jnp.asarray(slot_in))))
        for t in range(s):
            out[gi, t] = sum(combine[t, j] * slot_out[j] for j in range(n))
    return out


def test_soft_moe_matches_slot_loop():
    cfg = MoeConfig(router="soft_moe", num_experts=3, slots_per_expert=2, hidden_dim=6,
                    activation="gelu")
    layer = SoftMoeLayer(cfg, D, rngs=nnx.Rngs(0))
    layer.scale[...] = jnp.asarray(1.7)
    x = jax.random.normal(jax.random.key(14), (2, 5, D))
    y, stats = run(layer, x, True)
    w = {"wi": layer.experts.wi[...], "wo": layer.experts.wo[...], "activation": "gelu"}
    np.testing.assert_allclose(y, soft_moe_loop(layer.phi[...], 1.7, w, x, 2),
                               rtol=2e-5, atol=2e-6)
    assert float(stats["dropped_fraction"]) == 0.0


def test_layer_runs_under_jit_and_grad():
    cfg = MoeConfig(num_experts=4, num_selected_experts=2, hidden_dim=8, router_z_loss=1e-3)
    layer = make(cfg)
    x = jax.random.normal(jax.random.key(15), (2, 8, D))

    @nnx.jit
    def step(layer, x):
        def loss(layer):
            y, stats = layer(x)
            return jnp.mean(y ** 2) + stats["aux_loss"]
        return nnx.grad(loss)(layer)

    grads = step(layer, x)
    assert np.isfinite(np.asarray(grads["router"]["w"][...])).all()
    assert float(jnp.abs(grads["router"]["w"][...]).sum()) > 0


def test_gshard_evaluation_does_not_move_the_training_random_stream():
    layer = make(MoeConfig(router="gshard", num_experts=4, num_selected_experts=2, hidden_dim=8))
    x = jax.random.normal(jax.random.key(16), (2, 8, D))
    before = nnx.clone(layer.rngs).routing()
    y1, _ = run(layer, x, True)
    y2, _ = run(layer, x, True)
    np.testing.assert_array_equal(y1, y2)                           # fixed draws at eval
    after = nnx.clone(layer.rngs).routing()
    np.testing.assert_array_equal(jax.random.key_data(before), jax.random.key_data(after))
    run(layer, x, False)                                            # training does draw
    moved = nnx.clone(layer.rngs).routing()
    assert not np.array_equal(jax.random.key_data(before), jax.random.key_data(moved))


def test_router_dtype_rounds_inputs_and_weights_to_bfloat16():
    """Switch Table 2's bfloat16 router: x and W_g in bfloat16, logits in bfloat16; the default
    float32 router keeps full precision whatever the input dtype."""
    import ml_dtypes
    from moejax.routing.router import Router
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 5, 16)), np.float32)
    for dtype in ("float32", "bfloat16"):
        router = Router(MoeConfig(num_experts=4, router_dtype=dtype), 16, rngs=nnx.Rngs(0))
        w = np.asarray(router.w[...])
        logits, _ = router(jnp.asarray(x))
        if dtype == "float32":
            assert logits.dtype == jnp.float32
            np.testing.assert_allclose(logits, np.einsum("gsd,de->gse", x, w), rtol=1e-5,
                                       atol=1e-5)
        else:
            assert logits.dtype == jnp.bfloat16
            xb = x.astype(ml_dtypes.bfloat16).astype(np.float64)
            wb = w.astype(ml_dtypes.bfloat16).astype(np.float64)
            expected = np.einsum("gsd,de->gse", xb, wb)
            np.testing.assert_allclose(np.asarray(logits, np.float64), expected, rtol=2e-2,
                                       atol=2e-2)
            # and it differs from the float32 router's logits by bfloat16 rounding
            assert not np.allclose(np.asarray(logits, np.float32),
                                   np.einsum("gsd,de->gse", x, w), rtol=1e-6, atol=1e-7)
