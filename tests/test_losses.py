"""Auxiliary losses and routing metrics against hand-worked values and independent NumPy loops.

Every expected number here comes from the paper's definition (see /work/shared/PAPERS.md),
worked by hand or by a plain Python/NumPy loop over groups, tokens and experts; the library is
never compared with itself.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moejax import losses as _losses
from moejax import metrics as _metrics


class _Jitted:
    """The library functions under jax.jit: one compilation per shape instead of one per op
    (keeps the file fast); the traced code is exactly the library's."""

    def __init__(self, module, names):
        for name in names:
            setattr(self, name, jax.jit(getattr(module, name)))


losses = _Jitted(_losses, ["load_balance_loss", "router_z_loss", "cv_squared", "importance_loss",
                           "load_loss", "sequence_balance_loss"])
metrics = _Jitted(_metrics, ["max_violation", "router_entropy"])

RTOL = 1e-5
ATOL = 1e-6


def f32(x):
    return jnp.asarray(np.asarray(x, dtype=np.float32))


def i32(x):
    return jnp.asarray(np.asarray(x, dtype=np.int32))


# ---------------------------------------------------------------------------------------------
# Independent NumPy references (loops, float64).
# ---------------------------------------------------------------------------------------------

def ref_load_balance(probs, expert_index):
    """Switch eq. 4 per group (f over the top-k set, before capacity), averaged over groups."""
    probs = np.asarray(probs, np.float64)
    expert_index = np.asarray(expert_index)
    g_count, s_count, e_count = probs.shape
    total = 0.0
    for g in range(g_count):
        group_loss = 0.0
        for e in range(e_count):
            tokens_with_e = sum(1 for s in range(s_count) if e in set(expert_index[g, s].tolist()))
            f_e = tokens_with_e / s_count
            p_e = sum(probs[g, s, e] for s in range(s_count)) / s_count
            group_loss += f_e * p_e
        total += e_count * group_loss
    return total / g_count


def ref_z_loss(logits):
    logits = np.asarray(logits, np.float64).reshape(-1, np.shape(logits)[-1])
    acc = 0.0
    for row in logits:
        m = row.max()
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        acc += lse * lse
    return acc / len(logits)


def ref_cv_squared(values):
    values = [float(v) for v in np.asarray(values, np.float64).ravel()]
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n          # population variance
    return var / (mean * mean)


def ref_sum_over_batch(x):
    x = np.asarray(x, np.float64)
    g_count, s_count, e_count = x.shape
    return [sum(x[g, s, e] for g in range(g_count) for s in range(s_count))
            for e in range(e_count)]


def ref_sequence_balance(affinity, expert_index):
    """DeepSeek-V3 eqs. 17-20, one routing group = one sequence, averaged over groups."""
    affinity = np.asarray(affinity, np.float64)
    expert_index = np.asarray(expert_index)
    g_count, t_count, e_count = affinity.shape
    k = expert_index.shape[-1]
    total = 0.0
    for g in range(g_count):
        loss = 0.0
        for i in range(e_count):
            chosen = sum(1 for t in range(t_count) if i in expert_index[g, t].tolist())
            f_i = e_count / (k * t_count) * chosen
            p_i = sum(affinity[g, t, i] / affinity[g, t].sum() for t in range(t_count)) / t_count
            loss += f_i * p_i
        total += loss
    return total / g_count


def ref_entropy(probs):
    probs = np.asarray(probs, np.float64).reshape(-1, np.shape(probs)[-1])
    acc = 0.0
    for row in probs:
        acc += -sum(p * math.log(p) for p in row if p > 0)
    return acc / len(probs)


def random_top_k(rng, g, s, e, k):
    """Random router probabilities and their top-k expert indices (distinct per token)."""
    logits = rng.normal(size=(g, s, e))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    index = np.argsort(-probs, axis=-1)[..., :k]
    return probs.astype(np.float32), index.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Switch / flaxformer load-balancing loss.
# ---------------------------------------------------------------------------------------------

def uniform_routing(g, s, e, k):
    """probs all 1/E; token t picks experts (t·k + j) mod E, j < k: every expert equally used."""
    assert (s * k) % e == 0
    probs = np.full((g, s, e), 1.0 / e, np.float32)
    index = np.array([[[(t * k + j) % e for j in range(k)] for t in range(s)]] * g, np.int32)
    return probs, index


@pytest.mark.parametrize("e, s", [(2, 4), (4, 8), (8, 16), (16, 32)])
def test_load_balance_uniform_top1_is_one(e, s):
    """Switch eq. 4: E · Σ (1/E)(1/E) · E = 1, the known minimum for k = 1."""
    probs, index = uniform_routing(2, s, e, 1)
    np.testing.assert_allclose(losses.load_balance_loss(f32(probs), i32(index)), 1.0, rtol=RTOL)


@pytest.mark.parametrize("e, k, s", [(4, 2, 8), (8, 2, 16), (8, 4, 8), (6, 3, 4)])
def test_load_balance_uniform_top_k_is_k(e, k, s):
    """flaxformer convention (docstring): with f over the top-k set, uniform routing gives k."""
    probs, index = uniform_routing(3, s, e, k)
    np.testing.assert_allclose(losses.load_balance_loss(f32(probs), i32(index)), float(k),
                               rtol=RTOL)


@pytest.mark.parametrize("e", [2, 4, 8, 32])
def test_load_balance_collapsed_router_is_num_experts(e):
    """Every token to expert 0 with probability 1: f_0 = P_0 = 1, loss = E."""
    s = 6
    probs = np.zeros((2, s, e), np.float32)
    probs[..., 0] = 1.0
    index = np.zeros((2, s, 1), np.int32)
    np.testing.assert_allclose(losses.load_balance_loss(f32(probs), i32(index)), float(e),
                               rtol=RTOL)


def test_load_balance_hand_example_one_group():
    """E = 2, S = 4, k = 1, one group, worked by hand.

    probs: [.9 .1] [.6 .4] [.3 .7] [.8 .2]; top-1: 0 0 1 0
      f = [3/4, 1/4];  P = [(.9+.6+.3+.8)/4, (.1+.4+.7+.2)/4] = [.65, .35]
      loss = 2 · (.75·.65 + .25·.35) = 2 · (.4875 + .0875) = 1.15
    """
    probs = [[[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]]]
    index = [[[0], [0], [1], [0]]]
    np.testing.assert_allclose(losses.load_balance_loss(f32(probs), i32(index)), 1.15, rtol=RTOL)


def test_load_balance_hand_example_top2_and_group_mean():
    """Two groups, E = 3, S = 2, k = 2, averaged over groups (flaxformer per-group loss).

    Group 0: probs [.5 .3 .2] [.1 .6 .3]; choices {0,1} {1,2}
      f = [1/2, 1, 1/2]; P = [.3, .45, .25]; Σ f·P = .15 + .45 + .125 = .725; ·3 = 2.175
    Group 1: probs uniform 1/3, choices {0,1} {0,1}
      f = [1, 1, 0]; P = [1/3]*3; Σ = 2/3; ·3 = 2
    mean = (2.175 + 2) / 2 = 2.0875
    """
    probs = [[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]],
             [[1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]]]
    index = [[[0, 1], [1, 2]], [[0, 1], [1, 0]]]
    np.testing.assert_allclose(losses.load_balance_loss(f32(probs), i32(index)), 2.0875,
                               rtol=RTOL)


@pytest.mark.parametrize("g, s, e, k, seed", [(1, 4, 2, 1, 0), (3, 16, 8, 1, 1),
                                               (2, 12, 8, 2, 2), (4, 10, 6, 3, 3),
                                               (2, 7, 5, 5, 4)])
def test_load_balance_matches_numpy_loop(g, s, e, k, seed):
    probs, index = random_top_k(np.random.default_rng(seed), g, s, e, k)
    np.testing.assert_allclose(losses.load_balance_loss(f32(probs), i32(index)),
                               ref_load_balance(probs, index), rtol=RTOL)


def test_load_balance_counts_a_token_once_per_expert_and_ignores_non_top_choices():
    """f is the fraction of tokens with e among their choices: arbitrary (not top-prob) indices
    are taken as given, each token counts at most once per expert."""
    rng = np.random.default_rng(7)
    g, s, e, k = 2, 9, 4, 2
    probs = rng.dirichlet(np.ones(e), size=(g, s)).astype(np.float32)
    index = np.stack([rng.permutation(e)[:k] for _ in range(g * s)]).reshape(g, s, k)
    np.testing.assert_allclose(losses.load_balance_loss(f32(probs), i32(index)),
                               ref_load_balance(probs, index), rtol=RTOL)


def test_load_balance_gradient_flows_through_probs_only():
    """d loss / d probs[g, s, e] = E · f_{g,e} / (G · S) (f is a non-differentiable count)."""
    g, s, e, k = 2, 6, 4, 2
    probs, index = random_top_k(np.random.default_rng(11), g, s, e, k)
    grad = jax.jit(jax.grad(_losses.load_balance_loss))(f32(probs), i32(index))
    expected = np.zeros((g, s, e))
    for gi in range(g):
        for ei in range(e):
            f = sum(1 for t in range(s) if ei in index[gi, t].tolist()) / s
            expected[gi, :, ei] = e * f / (g * s)
    np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# ST-MoE router z-loss.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("e", [2, 4, 8, 64])
def test_z_loss_zero_logits_is_log_e_squared(e):
    logits = np.zeros((3, 5, e), np.float32)
    np.testing.assert_allclose(losses.router_z_loss(f32(logits)), math.log(e) ** 2, rtol=RTOL)


def test_z_loss_hand_example():
    """Two tokens, E = 2: logsumexp([0, 0]) = ln 2; logsumexp([ln 3, 0]) = ln 4 = 2 ln 2.

    L_z = (ln²2 + 4 ln²2) / 2 = 2.5 ln²2 ≈ 1.2011325
    """
    logits = [[[0.0, 0.0], [math.log(3.0), 0.0]]]
    np.testing.assert_allclose(losses.router_z_loss(f32(logits)), 2.5 * math.log(2) ** 2,
                               rtol=RTOL)


def test_z_loss_shift_and_large_logits_are_stable():
    """logsumexp(x + c) = logsumexp(x) + c; logits of 100 must not overflow in float32."""
    logits = np.full((1, 2, 4), 100.0, np.float32)
    expected = (100.0 + math.log(4)) ** 2
    value = losses.router_z_loss(f32(logits))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, expected, rtol=RTOL)


@pytest.mark.parametrize("shape, seed", [((1, 3, 2), 0), ((2, 8, 8), 1), ((4, 5, 16), 2),
                                         ((6, 4), 3)])
def test_z_loss_matches_numpy_loop(shape, seed):
    logits = (3.0 * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)
    np.testing.assert_allclose(losses.router_z_loss(f32(logits)), ref_z_loss(logits), rtol=RTOL)


def test_z_loss_gradient():
    """d/dx_ij of mean_i lse_i² = 2 · lse_i · softmax(x_i)_j / N."""
    logits = np.random.default_rng(5).normal(size=(2, 3, 4)).astype(np.float32)
    grad = jax.jit(jax.grad(_losses.router_z_loss))(f32(logits))
    flat = logits.astype(np.float64).reshape(-1, 4)
    expected = np.zeros_like(flat)
    for i, row in enumerate(flat):
        lse = math.log(sum(math.exp(v) for v in row))
        for j, v in enumerate(row):
            expected[i, j] = 2.0 * lse * math.exp(v - lse) / len(flat)
    np.testing.assert_allclose(grad.reshape(-1, 4), expected, rtol=1e-4, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Shazeer et al. 2017 CV² losses.
# ---------------------------------------------------------------------------------------------

def test_cv_squared_hand_example():
    """[1, 3]: population variance 1, mean 2 -> 1 / 4."""
    np.testing.assert_allclose(losses.cv_squared(f32([1.0, 3.0])), 0.25, rtol=RTOL)


def test_cv_squared_uses_population_variance():
    """[0, 0, 6]: mean 2, population variance (4+4+16)/3 = 8 -> 2 (sample variance would give 3)."""
    np.testing.assert_allclose(losses.cv_squared(f32([0.0, 0.0, 6.0])), 2.0, rtol=RTOL)


@pytest.mark.parametrize("n", [1, 2, 8])
def test_cv_squared_balanced_is_zero(n):
    np.testing.assert_allclose(losses.cv_squared(f32([2.5] * n)), 0.0, atol=ATOL)


def test_cv_squared_all_zero_is_finite():
    value = losses.cv_squared(f32([0.0, 0.0, 0.0]))
    assert np.isfinite(value) and float(value) == 0.0


def test_importance_loss_balanced_is_zero():
    gates = np.full((2, 4, 4), 0.25, np.float32)
    np.testing.assert_allclose(losses.importance_loss(f32(gates)), 0.0, atol=ATOL)


def test_importance_loss_hand_example_sums_over_groups_and_tokens():
    """Two groups of two tokens, each gate [.25, .75]: importance = [1, 3] -> CV² = 1/4."""
    gates = np.tile(np.array([0.25, 0.75], np.float32), (2, 2, 1))
    np.testing.assert_allclose(losses.importance_loss(f32(gates)), 0.25, rtol=RTOL)


def test_importance_loss_sparse_top1_hand_example():
    """Top-1 gates (zeros for unselected experts), E = 3, S = 3:
    gates [.5 0 0] [0 .5 0] [.5 0 0] -> importance [1, .5, 0], mean .5,
    variance (.25 + 0 + .25)/3 = 1/6 -> CV² = (1/6)/.25 = 2/3."""
    gates = [[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.5, 0.0, 0.0]]]
    np.testing.assert_allclose(losses.importance_loss(f32(gates)), 2.0 / 3.0, rtol=RTOL)


def test_load_loss_balanced_and_hand_example():
    balanced = np.full((3, 2, 5), 0.4, np.float32)
    np.testing.assert_allclose(losses.load_loss(f32(balanced)), 0.0, atol=ATOL)
    # Σ_x P(x, e) = [1, 3] over 2 groups x 2 tokens.
    p = np.tile(np.array([0.25, 0.75], np.float32), (2, 2, 1))
    np.testing.assert_allclose(losses.load_loss(f32(p)), 0.25, rtol=RTOL)


@pytest.mark.parametrize("fn", [losses.importance_loss, losses.load_loss])
@pytest.mark.parametrize("shape, seed", [((1, 5, 3), 0), ((3, 7, 8), 1), ((2, 16, 4), 2)])
def test_cv_losses_match_numpy_loop(fn, shape, seed):
    x = np.random.default_rng(seed).uniform(0.0, 1.0, size=shape).astype(np.float32)
    expected = ref_cv_squared(ref_sum_over_batch(x))
    np.testing.assert_allclose(fn(f32(x)), expected, rtol=1e-4)


@pytest.mark.parametrize("n, seed", [(2, 0), (5, 1), (64, 2)])
def test_cv_squared_matches_numpy_loop(n, seed):
    x = np.random.default_rng(seed).exponential(size=n).astype(np.float32)
    np.testing.assert_allclose(losses.cv_squared(f32(x)), ref_cv_squared(x), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# DeepSeek-V3 sequence-wise balance loss.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("e, k, t", [(2, 1, 4), (4, 2, 8), (8, 2, 4), (6, 3, 2)])
def test_sequence_balance_uniform_is_one(e, k, t):
    """Equal affinities, every expert chosen k·T/E times: f_i = 1, P_i = 1/E -> Σ = 1."""
    _, index = uniform_routing(2, t, e, k)
    affinity = np.full((2, t, e), 0.3, np.float32)
    np.testing.assert_allclose(losses.sequence_balance_loss(f32(affinity), i32(index)), 1.0,
                               rtol=RTOL)


def test_sequence_balance_hand_example():
    """E = 3, k = 2, T = 2, one sequence.

    s = [.9 .5 .1], [.2 .4 .4]; choices {0,1}, {1,2}; counts [1, 2, 1]
      f = 3/(2·2) · counts = [.75, 1.5, .75]
      s' = [.6, 1/3, 1/15], [.2, .4, .4];  P = [.4, 11/30, 7/30]
      loss = .75·.4 + 1.5·11/30 + .75·7/30 = .3 + .55 + .175 = 1.025
    """
    affinity = [[[0.9, 0.5, 0.1], [0.2, 0.4, 0.4]]]
    index = [[[0, 1], [1, 2]]]
    np.testing.assert_allclose(losses.sequence_balance_loss(f32(affinity), i32(index)), 1.025,
                               rtol=RTOL)


def test_sequence_balance_hand_example_collapsed_two_groups():
    """E = 2, k = 1, T = 2. Group 0: s = [.8 .2], [.6 .6], both choose 0: f = [2, 0],
    P_0 = (.8 + .5)/2 = .65 -> 1.3. Group 1: s = [.5 .5] x2, choices 0, 1: f = [1, 1] -> 1.
    Mean over groups = 1.15."""
    affinity = [[[0.8, 0.2], [0.6, 0.6]], [[0.5, 0.5], [0.5, 0.5]]]
    index = [[[0], [0]], [[0], [1]]]
    np.testing.assert_allclose(losses.sequence_balance_loss(f32(affinity), i32(index)), 1.15,
                               rtol=RTOL)


@pytest.mark.parametrize("g, t, e, k, seed", [(1, 4, 2, 1, 0), (2, 8, 8, 2, 1),
                                               (3, 6, 16, 4, 2), (2, 5, 6, 6, 3)])
def test_sequence_balance_matches_numpy_loop(g, t, e, k, seed):
    rng = np.random.default_rng(seed)
    affinity = (1.0 / (1.0 + np.exp(-rng.normal(size=(g, t, e))))).astype(np.float32)
    bias = rng.normal(size=e)                       # selection uses s + b, as in DeepSeek-V3
    index = np.argsort(-(affinity + bias), axis=-1)[..., :k].astype(np.int32)
    np.testing.assert_allclose(losses.sequence_balance_loss(f32(affinity), i32(index)),
                               ref_sequence_balance(affinity, index), rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# Metrics: MaxVio and router entropy.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts, expected", [
    ([4, 4, 4, 4], 0.0),
    ([8, 0, 4, 4], 1.0),          # mean 4, max 8
    ([16, 0, 0, 0], 3.0),         # everything on one of 4 experts: E - 1
    ([3, 1], 0.5),                # mean 2, max 3
    ([0, 0, 0], 0.0),             # no load at all: defined as 0, not NaN
])
def test_max_violation(counts, expected):
    value = metrics.max_violation(f32(counts))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("e", [2, 4, 8, 128])
def test_router_entropy_uniform_is_log_e(e):
    probs = np.full((2, 3, e), 1.0 / e, np.float32)
    np.testing.assert_allclose(metrics.router_entropy(f32(probs)), math.log(e), rtol=RTOL)


@pytest.mark.parametrize("e", [2, 8])
def test_router_entropy_one_hot_is_zero(e):
    probs = np.zeros((2, 3, e), np.float32)
    probs[..., 1] = 1.0
    value = metrics.router_entropy(f32(probs))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, 0.0, atol=ATOL)


def test_router_entropy_hand_example_and_numpy_loop():
    """[.5 .5 0 0] -> ln 2; [.25]*4 -> ln 4; mean = 1.5 ln 2."""
    probs = [[[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]]
    np.testing.assert_allclose(metrics.router_entropy(f32(probs)), 1.5 * math.log(2), rtol=RTOL)
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(6), size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(metrics.router_entropy(f32(probs)), ref_entropy(probs), rtol=1e-5)


def _plan_routing(slot_token, group_size):
    from moejax.plan import CapacityPlan
    from moejax.routing.types import Routing
    slot_token = jnp.asarray(slot_token, jnp.int32)
    plan = CapacityPlan(slot_token=slot_token, slot_weight=jnp.ones(slot_token.shape),
                        num_requested=jnp.zeros(slot_token.shape[:1]))
    return Routing(probs=None, assignment=None, plan=plan, losses={})


def test_experts_per_token_hand_example_with_a_plan():
    # one group, S = 4 tokens, E = 2 experts, C = 3 slots; 4 marks an empty slot.
    # token 0: experts 0 and 1; token 1: expert 0; token 2: none (dropped); token 3: expert 1.
    routing = _plan_routing([[[0, 1, 4], [0, 3, 4]]], group_size=4)
    hist = _metrics.experts_per_token(routing, 4)
    np.testing.assert_allclose(hist, [0.25, 0.5, 0.25, 0.0, 0.0])


def test_experts_per_token_matches_numpy_loop_and_caps_the_last_bin():
    rng = np.random.default_rng(3)
    g, e, c, s = 3, 6, 5, 7
    slot_token = rng.integers(0, s + 1, size=(g, e, c))       # s marks an empty slot
    hist = np.asarray(_metrics.experts_per_token(_plan_routing(slot_token, s), s))
    expected = np.zeros(5)
    for gi in range(g):
        for t in range(s):
            n = sum(int(slot_token[gi, ei, ci] == t) for ei in range(e) for ci in range(c))
            expected[min(n, 4)] += 1
    np.testing.assert_allclose(hist, expected / (g * s), rtol=1e-6)


def test_experts_per_token_dropless_counts_valid_choices():
    from moejax.routing.types import Assignment, Routing
    valid = jnp.asarray([[[True, True], [True, False], [False, False]]])     # [G=1, S=3, k=2]
    assignment = Assignment(expert_index=jnp.zeros((1, 3, 2), jnp.int32),
                            gate=jnp.ones((1, 3, 2)), valid=valid)
    routing = Routing(probs=None, assignment=assignment, plan=None, losses={})
    np.testing.assert_allclose(_metrics.experts_per_token(routing, 3),
                               [1 / 3, 1 / 3, 1 / 3, 0.0, 0.0], rtol=1e-6)
