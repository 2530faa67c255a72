"""Routing families and the capacity plan against independent per-token NumPy loops.

Every expected value comes from the paper's definition (see /work/shared/PAPERS.md) worked by a
plain Python loop over groups, tokens and experts in float64, or by hand; the library is never
compared with itself. The only library-side inputs the references take are the random sources
the library draws (GShard's uniform u, noisy top-k's standard normal noise), regenerated here
with the same jax.random call and key.

Shapes: G groups, S tokens per group, E experts, k choices per token, C slots per expert.
"""

import functools
import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from moejax import losses as losses_lib
from moejax import plan as plan_lib
from moejax import routing as _routing
from moejax.config import MoeConfig
from moejax.plan import expert_capacity


# The library functions under jax.jit: one compilation per shape and static setting instead of
# one per op, with XLA's backend optimisation off (compiles several times faster on CPU; the
# tensors are tiny). The traced code is exactly the library's.
def _jit(fn, *static):
    return jax.jit(fn, static_argnames=static,
                   compiler_options={"xla_backend_optimization_level": "0"})


def _drop_stats(plan, group_size):
    """The library's token-level statistics of a plan: tokens_served [G, S], dropped_fraction,
    dropped_assignment_fraction."""
    return (plan_lib.tokens_served(plan, group_size), plan_lib.dropped_fraction(plan, group_size),
            plan_lib.dropped_assignment_fraction(plan, group_size))


def _with_stats(fn):
    """fn(..., x [G, S, ...], ...) -> Routing or CapacityPlan, returned with its plan's drop
    statistics (None without a plan), all in one compilation. S: the first array argument's."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        plan = out if isinstance(out, plan_lib.CapacityPlan) else out.plan
        group_size = next(a for a in args if hasattr(a, "shape")).shape[1]
        return out, (None if plan is None else _drop_stats(plan, group_size))
    return wrapped


top_k_routing = _jit(_routing.top_k_routing, "k", "gate_order", "renormalize",
                     "batch_prioritized")
gshard_routing = _jit(_routing.gshard_routing, "batch_prioritized")
deepseek_v3_routing = _jit(_routing.deepseek_v3_routing, "k", "routed_scaling_factor",
                           "renormalize", "num_expert_groups", "num_selected_groups")
dense_routing = _jit(_routing.dense_routing)
update_selection_bias = _jit(_routing.update_selection_bias)
uniform = _jit(jax.random.uniform, "shape")
normal = _jit(jax.random.normal, "shape")


def _noisy_top_k_with_load(clean_logits, noise_logits, k, key):
    """noisy_top_k_routing, also returning the [G, S, E] load estimator P(x, i) that the
    library hands to losses.load_loss (read while tracing; the library is not changed)."""
    seen = []
    real_load_loss = losses_lib.load_loss

    def spy(prob_selected, mask=None):
        seen.append(prob_selected)
        return real_load_loss(prob_selected, mask)

    with mock.patch.object(losses_lib, "load_loss", spy):
        out = _routing.noisy_top_k_routing(clean_logits, noise_logits, k, key)
    return out, seen[0]


# Returns (result, P).
noisy_top_k_routing = _jit(_noisy_top_k_with_load, "k")
# These return (result, drop statistics).
expert_choice_routing = _jit(_with_stats(_routing.expert_choice_routing), "capacity",
                             "max_experts_per_token")
route = _jit(_with_stats(_routing.route), "cfg", "capacity")
plan_from_assignment = _jit(_with_stats(plan_lib.plan_from_assignment), "num_experts",
                            "capacity")

RTOL = 1e-6
ATOL = 1e-6

SEEDS = [0, 1]
# (G, S, E, k): G in {1, 3}, S in {5, 16, 33}, E in {2, 4, 8}, k in {1, 2, 3} with k <= E.
# Together they cover every value; each new shape costs an XLA compilation, seeds are free.
SHAPES = [(1, 5, 2, 2), (3, 16, 4, 1), (1, 33, 8, 3), (3, 33, 8, 2)]


def shape_id(shape):
    return "G{}S{}E{}k{}".format(*shape)


def random_logits(seed, shape, scale=2.0):
    """float32 logits; scale 2 spreads the softmax so routing is decisive but not one-hot."""
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol)


def same(actual, expected):
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


# =============================================================================================
# Independent NumPy references (plain loops, float64).
# =============================================================================================

def ref_softmax(row):
    """[n] -> [n] softmax of one token's scores."""
    row = np.asarray(row, np.float64)
    ex = [math.exp(v - max(row)) for v in row]
    total = sum(ex)
    return np.array([v / total for v in ex])


def ref_sigmoid(x):
    return 1.0 / (1.0 + math.exp(-float(x)))


def ref_softplus(x):
    return float(np.logaddexp(0.0, float(x)))


def ref_best(scores, k, allowed=None):
    """Indices of the k largest scores, best first (ties: lower index first, as lax.top_k)."""
    candidates = [i for i in range(len(scores)) if allowed is None or allowed[i]]
    return sorted(candidates, key=lambda i: (-scores[i], i))[:k]


def ref_top_k(logits, k, gate_order="softmax_then_top_k", renormalize=False):
    """Token-choice top-k, one token at a time.

    logits [G, S, E] -> expert_index [G, S, k] (best first), gate [G, S, k], probs [G, S, E],
    top1_prob [G, S] (the top-1 router probability, V-MoE's batch priority).
    """
    g_count, s_count, e_count = logits.shape
    index = np.zeros((g_count, s_count, k), np.int64)
    gate = np.zeros((g_count, s_count, k))
    probs = np.zeros((g_count, s_count, e_count))
    top1 = np.zeros((g_count, s_count))
    for g in range(g_count):
        for s in range(s_count):
            row = [float(v) for v in logits[g, s]]
            p = ref_softmax(row)
            probs[g, s] = p
            chosen = ref_best(row, k)          # softmax is monotone: same order as the probs
            if gate_order == "softmax_then_top_k":
                w = [p[e] for e in chosen]
            else:                              # Mixtral: softmax over the chosen logits only
                w = list(ref_softmax([row[e] for e in chosen]))
            if renormalize:
                w = [v / sum(w) for v in w]
            index[g, s] = chosen
            gate[g, s] = w
            top1[g, s] = max(p)
    return index, gate, probs, top1


def ref_plan(expert_index, gate, valid, num_experts, capacity, priority=None):
    """Capacity plan by the rule: rank 0 of every token, then rank 1, ...; within a rank, tokens
    in sequence order (or by descending priority, ties in sequence order); an assignment takes
    its expert's next free slot if fewer than C are filled, else it is dropped.

    Returns slot_token [G, E, C] (S = empty), slot_weight [G, E, C], requested [G].
    """
    g_count, s_count, k = expert_index.shape
    slot_token = np.full((g_count, num_experts, capacity), s_count, np.int64)
    slot_weight = np.zeros((g_count, num_experts, capacity))
    requested = np.zeros(g_count)
    for g in range(g_count):
        order = list(range(s_count))
        if priority is not None:
            order = sorted(order, key=lambda t: -float(priority[g, t]))   # stable
        filled = [0] * num_experts
        for r in range(k):
            for t in order:
                if not valid[g, t, r]:
                    continue
                requested[g] += 1
                e = int(expert_index[g, t, r])
                if filled[e] < capacity:
                    slot_token[g, e, filled[e]] = t
                    slot_weight[g, e, filled[e]] = gate[g, t, r]
                    filled[e] += 1
    return slot_token, slot_weight, requested


def ref_served(slot_token, group_size):
    """[G, S] number of slots holding each token."""
    g_count = slot_token.shape[0]
    served = np.zeros((g_count, group_size), np.int64)
    for g in range(g_count):
        for t in slot_token[g].ravel():
            if t < group_size:
                served[g, t] += 1
    return served


def ref_gshard(logits, u):
    """GShard top-2: renormalised gates; second choice valid iff 2·g2 > u[g, s]."""
    index, gate, probs, top1 = ref_top_k(logits, 2, renormalize=True)
    g_count, s_count, _ = logits.shape
    valid = np.ones((g_count, s_count, 2), bool)
    for g in range(g_count):
        for s in range(s_count):
            valid[g, s, 1] = 2.0 * gate[g, s, 1] > float(u[g, s])
    return index, gate, valid, probs


def ref_noisy_top_k(clean, noise_logits, z, k):
    """Shazeer et al. 2017 with the library's std floor: H = clean + z·(softplus(noise)+1e-2).

    z [G, S, E]: the standard normal draw (zeros at eval). Returns expert_index [G, S, k],
    gate [G, S, k], full gates [G, S, E], P [G, S, E] = Phi((clean_i - kth_other_i) / std_i),
    kth_other_i the k-th largest H among the other experts.
    """
    g_count, s_count, e_count = clean.shape
    index = np.zeros((g_count, s_count, k), np.int64)
    gate = np.zeros((g_count, s_count, k))
    full = np.zeros((g_count, s_count, e_count))
    prob = np.zeros((g_count, s_count, e_count))
    for g in range(g_count):
        for s in range(s_count):
            std = [ref_softplus(noise_logits[g, s, e]) + 1e-2 for e in range(e_count)]
            h = [float(clean[g, s, e]) + float(z[g, s, e]) * std[e] for e in range(e_count)]
            chosen = ref_best(h, k)
            w = ref_softmax([h[e] for e in chosen])
            index[g, s] = chosen
            gate[g, s] = w
            for e, v in zip(chosen, w):
                full[g, s, e] = v
            for i in range(e_count):
                others = sorted((h[j] for j in range(e_count) if j != i), reverse=True)
                if len(others) < k:            # k = E: always selected
                    prob[g, s, i] = 1.0
                else:
                    prob[g, s, i] = norm.cdf((float(clean[g, s, i]) - others[k - 1]) / std[i])
    return index, gate, full, prob


def ref_cv_squared(values):
    values = [float(v) for v in np.ravel(values)]
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)        # population variance
    return var / (mean * mean)


def ref_sum_tokens(x):
    """[G, S, E] -> [E] sum over every token of the batch."""
    g_count, s_count, e_count = x.shape
    return [sum(x[g, s, e] for g in range(g_count) for s in range(s_count))
            for e in range(e_count)]


def ref_expert_choice(logits, capacity, cap=None):
    """Zhou et al. 2022: expert e takes the C tokens with the highest softmax score in its column.

    cap (EC-CAP): a token keeps its `cap` best-scoring experts among those that took it; the
    slots it releases stay in place, empty (token S, weight 0).
    Returns slot_token [G, E, C], slot_weight [G, E, C], probs [G, S, E].
    """
    g_count, s_count, e_count = logits.shape
    probs = np.zeros((g_count, s_count, e_count))
    slot_token = np.full((g_count, e_count, capacity), s_count, np.int64)
    slot_weight = np.zeros((g_count, e_count, capacity))
    for g in range(g_count):
        for s in range(s_count):
            probs[g, s] = ref_softmax(logits[g, s])
        for e in range(e_count):
            column = [probs[g, s, e] for s in range(s_count)]
            for c, t in enumerate(ref_best(column, capacity)):
                slot_token[g, e, c] = t
                slot_weight[g, e, c] = column[t]
        if cap is None:
            continue
        for t in range(s_count):
            held = [(e, c) for e in range(e_count) for c in range(capacity)
                    if slot_token[g, e, c] == t]
            held.sort(key=lambda ec: (-probs[g, t, ec[0]], ec[0]))
            for e, c in held[cap:]:
                slot_token[g, e, c] = s_count
                slot_weight[g, e, c] = 0.0
    return slot_token, slot_weight, probs


def ref_deepseek_v3(logits, bias, k, scaling=1.0, renormalize=True, num_groups=1,
                    num_selected_groups=1):
    """DeepSeek-V3: s = sigmoid(x); choose top-k of s + b (only among the experts of the
    num_selected_groups groups with the largest sum of their top-2 of s + b); gates from s.

    Returns expert_index [G, S, k], gate [G, S, k], probs [G, S, E] = s / Σ s.
    """
    g_count, s_count, e_count = logits.shape
    per_group = e_count // num_groups
    bias = np.zeros(e_count) if bias is None else np.asarray(bias, np.float64)
    index = np.zeros((g_count, s_count, k), np.int64)
    gate = np.zeros((g_count, s_count, k))
    probs = np.zeros((g_count, s_count, e_count))
    for g in range(g_count):
        for t in range(s_count):
            s = [ref_sigmoid(v) for v in logits[g, t]]
            score = [s[e] + bias[e] for e in range(e_count)]
            allowed = [True] * e_count
            if num_groups > 1:
                group_score = []
                for j in range(num_groups):
                    members = sorted(score[j * per_group:(j + 1) * per_group], reverse=True)
                    group_score.append(sum(members[:2]))
                kept = set(ref_best(group_score, num_selected_groups))
                allowed = [e // per_group in kept for e in range(e_count)]
            chosen = ref_best(score, k, allowed)
            w = [s[e] for e in chosen]
            if renormalize:
                w = [v / sum(w) for v in w]
            index[g, t] = chosen
            gate[g, t] = [v * scaling for v in w]
            probs[g, t] = [v / sum(s) for v in s]
    return index, gate, probs


def ref_load_balance(probs, expert_index):
    """Switch eq. 4 per group, f over the top-k set (flaxformer), averaged over groups."""
    g_count, s_count, e_count = probs.shape
    total = 0.0
    for g in range(g_count):
        acc = 0.0
        for e in range(e_count):
            f = sum(e in expert_index[g, s].tolist() for s in range(s_count)) / s_count
            p = sum(probs[g, s, e] for s in range(s_count)) / s_count
            acc += f * p
        total += e_count * acc
    return total / g_count


def ref_z_loss(logits):
    rows = np.asarray(logits, np.float64).reshape(-1, logits.shape[-1])
    acc = 0.0
    for row in rows:
        lse = max(row) + math.log(sum(math.exp(v - max(row)) for v in row))
        acc += lse * lse
    return acc / len(rows)


def check_plan(plan, stats, slot_token, slot_weight, requested, group_size):
    """The library plan and its drop statistics against a reference plan."""
    same(plan.slot_token, slot_token)
    close(plan.slot_weight, slot_weight)
    close(plan.num_requested, requested)
    served = ref_served(slot_token, group_size)
    tokens_served, dropped, dropped_assignments = stats
    same(tokens_served, served)
    close(dropped, np.mean(served == 0))
    filled = np.sum(slot_token < group_size)
    close(dropped_assignments, 1.0 - filled / requested.sum())


# =============================================================================================
# 1. top_k_routing
# =============================================================================================

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("gate_order", ["softmax_then_top_k", "top_k_then_softmax"])
@pytest.mark.parametrize("renormalize", [False, True])
def test_top_k_routing_matches_per_token_loop(seed, shape, gate_order, renormalize):
    g, s, e, k = shape
    logits = random_logits(seed, (g, s, e))
    out = top_k_routing(jnp.asarray(logits), k, gate_order=gate_order, renormalize=renormalize)
    index, gate, probs, _ = ref_top_k(logits, k, gate_order, renormalize)
    a = out.assignment
    assert a.expert_index.shape == (g, s, k) and a.expert_index.dtype == jnp.int32
    same(a.expert_index, index)                              # best first
    close(a.gate, gate)
    same(a.valid, np.ones((g, s, k), bool))
    assert a.priority is None
    close(out.probs, probs)
    close(out.losses["load_balance_loss"], ref_load_balance(probs, index), rtol=1e-5)
    close(out.losses["router_z_loss"], ref_z_loss(logits), rtol=1e-5)
    assert out.plan is None


def test_top_k_gate_orders_by_hand():
    """One token, logits [ln 1, ln 2, ln 3, ln 4] -> probs [.1 .2 .3 .4], k = 2 picks [3, 2].

    softmax_then_top_k: [.4, .3]; renormalised [4/7, 3/7].
    top_k_then_softmax: softmax([ln 4, ln 3]) = [4/7, 3/7] (already normalised).
    """
    logits = jnp.log(jnp.array([[[1.0, 2.0, 3.0, 4.0]]], jnp.float32))
    plain = top_k_routing(logits, 2).assignment
    same(plain.expert_index, [[[3, 2]]])
    close(plain.gate, [[[0.4, 0.3]]])
    close(top_k_routing(logits, 2, renormalize=True).assignment.gate, [[[4 / 7, 3 / 7]]])
    close(top_k_routing(logits, 2, gate_order="top_k_then_softmax").assignment.gate,
          [[[4 / 7, 3 / 7]]])


def test_top_k_batch_prioritized_priority_default_gates():
    """V-MoE priority: the top-1 router probability (with the default softmax_then_top_k,
    no renormalisation, the first gate)."""
    logits = random_logits(3, (3, 16, 4))
    _, _, _, top1 = ref_top_k(logits, 2)
    a = top_k_routing(jnp.asarray(logits), 2, batch_prioritized=True).assignment
    close(a.priority, top1)


def test_top_k_unknown_gate_order_raises():
    with pytest.raises(ValueError, match="gate_order"):
        top_k_routing(jnp.zeros((1, 2, 4)), 1, gate_order="nope")


# =============================================================================================
# 2. Expert capacity and the capacity plan
# =============================================================================================

@pytest.mark.parametrize("s, e, k, cf, min_cap, expected", [
    (8192, 128, 1, 1.25, 4, 80),    # Switch-Base: ceil(1.25·8192/128) = ceil(80) = 80
    (64, 8, 2, 1.0, 4, 16),         # top-2: ceil(1·2·64/8) = 16
    (4096, 16, 2, 1.25, 4, 640),    # ST-MoE-Base: ceil(1.25·2·4096/16) = 640
    (1024, 32, 1, 2.0, 4, 64),      # expert choice cf 2: 1024·2/32 = 64
    (33, 8, 2, 1.25, 4, 11),        # ceil(10.3125) = 11
    (16, 8, 1, 1.0, 4, 4),          # ceil(2) = 2 < min_capacity 4 -> 4
    (16, 8, 1, 1.0, 0, 2),          # min_capacity 0: the formula alone
    (5, 2, 2, 2.0, 1, 5),           # ceil(10) = 10 capped at S = 5
    (3, 8, 1, 1.0, 4, 3),           # min_capacity 4 > S = 3: capped at S
    (10, 4, 1, 0.1, 1, 1),          # ceil(0.25) = 1
])
def test_expert_capacity_hand_worked(s, e, k, cf, min_cap, expected):
    assert expert_capacity(s, e, k, cf, min_cap) == expected


def test_expert_capacity_exact_ceiling_for_decimal_factor():
    """ceil(1.1 · 1 · 100 / 10) = ceil(11) = 11 slots, not 12."""
    assert expert_capacity(100, 10, 1, 1.1, 0) == 11


PLAN_SHAPES = [(1, 5, 2, 2), (3, 16, 4, 1), (3, 33, 8, 3)]


def random_assignment(seed, g, s, e, k, p_valid=1.0):
    """Random distinct experts per token (not sorted by anything), gates and validity."""
    rng = np.random.default_rng(seed)
    index = np.stack([[rng.permutation(e)[:k] for _ in range(s)] for _ in range(g)])
    gate = rng.uniform(0.05, 1.0, size=(g, s, k)).astype(np.float32)
    valid = rng.uniform(size=(g, s, k)) < p_valid
    valid[..., 0] = True
    priority = rng.uniform(size=(g, s)).astype(np.float32)
    return index.astype(np.int32), gate, valid, priority


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", PLAN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("capacity", ["2", "S"])
@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("p_valid", [1.0, 0.6])      # 0.6: some later choices withdrawn
def test_plan_from_assignment_matches_slot_loop(seed, shape, capacity, prioritized, p_valid):
    g, s, e, k = shape
    capacity = s if capacity == "S" else int(capacity)     # C = S: nothing can be dropped
    index, gate, valid, priority = random_assignment(seed, g, s, e, k, p_valid)
    priority = priority if prioritized else None
    plan, stats = plan_from_assignment(
        jnp.asarray(index), jnp.asarray(gate), jnp.asarray(valid), e, capacity,
        None if priority is None else jnp.asarray(priority))
    assert plan.slot_token.shape == (g, e, capacity) and plan.capacity == capacity
    expected = ref_plan(index, gate, valid, e, capacity, priority)
    check_plan(plan, stats, *expected, s)
    if capacity == s:
        assert np.sum(expected[0] < s) == np.sum(valid)


def test_plan_drops_happen_and_order_matters():
    """Guards the test above against vacuity: with C = 2 some assignments are dropped, and the
    priority order changes which tokens keep their slots."""
    index, gate, valid, priority = random_assignment(0, 3, 33, 4, 2)
    seq = ref_plan(index, gate, valid, 4, 2)
    prio = ref_plan(index, gate, valid, 4, 2, priority)
    assert np.sum(seq[0] < 33) < np.sum(valid)
    assert not np.array_equal(seq[0], prio[0])


def test_plan_by_hand():
    """S = 4 tokens, E = 2, k = 2, C = 2, sequence order.

    choices (rank0, rank1): t0 (0, 1)  t1 (0, 1)  t2 (0, 1)  t3 (1, 0)
    rank 0: t0 -> e0[0], t1 -> e0[1], t2 -> e0 full (dropped), t3 -> e1[0]
    rank 1: t0 -> e1[1], t1 -> e1 full, t2 -> e1 full, t3 -> e0 full
    t2 gets no slot: dropped_fraction 1/4; 4 of 8 assignments kept.
    With priority [.1, .2, .9, .3]: order t2, t3, t1, t0 ->
    rank 0: t2 -> e0[0], t3 -> e1[0], t1 -> e0[1], t0 dropped; rank 1: t2 -> e1[1], rest full.
    """
    index = jnp.array([[[0, 1], [0, 1], [0, 1], [1, 0]]], jnp.int32)
    gate = jnp.array([[[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]]], jnp.float32)
    valid = jnp.ones((1, 4, 2), bool)
    plan, stats = plan_from_assignment(index, gate, valid, 2, 2)
    same(plan.slot_token, [[[0, 1], [3, 0]]])
    close(plan.slot_weight, [[[0.6, 0.7], [0.9, 0.4]]])
    served, dropped, dropped_assignments = stats
    same(served, [[2, 1, 0, 1]])
    close(dropped, 0.25)
    close(dropped_assignments, 0.5)

    plan, stats = plan_from_assignment(index, gate, valid, 2, 2,
                                       jnp.array([[0.1, 0.2, 0.9, 0.3]]))
    same(plan.slot_token, [[[2, 1], [3, 2]]])
    close(plan.slot_weight, [[[0.8, 0.7], [0.9, 0.2]]])
    same(stats[0], [[0, 1, 2, 1]])


# =============================================================================================
# 3. gshard_routing
# =============================================================================================

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(1, 5, 2), (3, 16, 4), (3, 33, 8), (1, 33, 4)],
                         ids=lambda sh: "G{}S{}E{}".format(*sh))
def test_gshard_routing_matches_per_token_loop(seed, shape):
    g, s, e = shape
    logits = random_logits(seed, shape)
    key = jax.random.PRNGKey(100 + seed)
    u = np.asarray(uniform(key, (g, s)))                     # the router's random source
    out = gshard_routing(jnp.asarray(logits), key)
    index, gate, valid, probs = ref_gshard(logits, u)
    a = out.assignment
    same(a.expert_index, index)
    close(a.gate, gate)                                      # not rescaled when 2nd withdrawn
    same(a.valid, valid)
    close(out.probs, probs)


def test_gshard_random_second_choice_is_exercised():
    """With random logits some second choices are withdrawn and some kept."""
    logits = random_logits(0, (3, 33, 8))
    key = jax.random.PRNGKey(100)
    _, _, valid, _ = ref_gshard(logits, np.asarray(uniform(key, (3, 33))))
    assert valid[..., 0].all() and 0 < valid[..., 1].sum() < valid[..., 1].size


@pytest.mark.parametrize("prioritized", [False, True])
def test_gshard_plan_skips_withdrawn_choices(prioritized):
    g, s, e, capacity = 3, 33, 4, 9
    logits = random_logits(5, (g, s, e))
    key = jax.random.PRNGKey(7)
    cfg = MoeConfig(router="gshard", num_experts=e, num_selected_experts=2,
                    batch_prioritized=prioritized)
    out, stats = route(cfg, jnp.asarray(logits), capacity=capacity, key=key)
    index, gate, valid, probs = ref_gshard(logits, np.asarray(uniform(key, (g, s))))
    # V-MoE priority: the top-1 router probability (before GShard's renormalisation).
    priority = probs.max(-1) if prioritized else None
    check_plan(out.plan, stats, *ref_plan(index, gate, valid, e, capacity, priority), s)
    assert out.plan.num_requested.sum() < g * s * 2          # some second choices withdrawn


# =============================================================================================
# 4. noisy_top_k_routing
# =============================================================================================

NOISY_SHAPES = [(1, 5, 2, 1), (1, 5, 2, 2), (3, 16, 4, 2), (1, 33, 8, 3)]   # k = E: P = 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", NOISY_SHAPES, ids=shape_id)
@pytest.mark.parametrize("train", [False, True])
def test_noisy_top_k_matches_per_token_loop(seed, shape, train):
    g, s, e, k = shape
    clean = random_logits(seed, (g, s, e))
    noise_logits = random_logits(seed + 50, (g, s, e), scale=1.0)
    key = jax.random.PRNGKey(seed + 200) if train else None
    z = (np.asarray(normal(key, (g, s, e))) if train
         else np.zeros((g, s, e), np.float32))
    out, load_prob = noisy_top_k_routing(jnp.asarray(clean), jnp.asarray(noise_logits), k, key)
    index, gate, full, prob = ref_noisy_top_k(clean, noise_logits, z, k)
    a = out.assignment
    same(a.expert_index, index)
    close(a.gate, gate)
    same(a.valid, np.ones((g, s, k), bool))
    close(out.probs, full)
    close(load_prob, prob)                                   # P(x, i), every token and expert
    close(out.losses["importance_loss"], ref_cv_squared(ref_sum_tokens(full)), rtol=1e-5)
    close(out.losses["load_loss"], ref_cv_squared(ref_sum_tokens(prob)), rtol=1e-5)
    close(out.losses["router_z_loss"], ref_z_loss(clean), rtol=1e-5)


def test_noisy_top_k_eval_is_clean_top_k():
    """key=None: the noise logits play no part in the choice, only in P's std."""
    clean = random_logits(4, (3, 16, 8))
    out, _ = noisy_top_k_routing(jnp.asarray(clean),
                                 jnp.asarray(random_logits(9, (3, 16, 8))), 2, None)
    index, _, _, _ = ref_top_k(clean, 2)
    same(out.assignment.expert_index, index)
    close(out.assignment.gate, ref_top_k(clean, 2, "top_k_then_softmax")[1])


def test_noisy_top_k_noise_changes_the_choice():
    """Guards against vacuity: in training the noise changes some token's experts."""
    g, s, e, k = 3, 16, 8, 2
    clean = random_logits(0, (g, s, e))
    z = np.asarray(normal(jax.random.PRNGKey(200), (g, s, e)))
    noisy = ref_noisy_top_k(clean, random_logits(50, (g, s, e), scale=1.0), z, k)[0]
    assert not np.array_equal(noisy, ref_top_k(clean, k)[0])


def test_noisy_top_k_load_estimator_by_hand():
    """One token, E = 3, k = 1, eval. clean [2, 1, 0]; std = softplus(0) + .01 = ln 2 + .01.

    Expert 0 is in: threshold = best other = 1 -> Phi((2 - 1) / std).
    Experts 1, 2 are out: threshold = H_0 = 2 -> Phi((1 - 2) / std), Phi((0 - 2) / std).
    """
    std = math.log(2.0) + 0.01
    out, load_prob = noisy_top_k_routing(jnp.array([[[2.0, 1.0, 0.0]]]), jnp.zeros((1, 1, 3)),
                                         1, None)
    expected = norm.cdf([1 / std, -1 / std, -2 / std])
    close(load_prob, [[expected]])
    close(out.losses["load_loss"], ref_cv_squared(expected), rtol=1e-5)
    close(out.probs, [[[1.0, 0.0, 0.0]]])
    close(out.losses["importance_loss"], ref_cv_squared([1.0, 0.0, 0.0]), rtol=1e-5)


# =============================================================================================
# 5. expert_choice_routing
# =============================================================================================

EC_SHAPES = [(1, 5, 2), (3, 33, 8)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", EC_SHAPES, ids=lambda sh: "G{}S{}E{}".format(*sh))
@pytest.mark.parametrize("cf", [1.0, 2.0])
@pytest.mark.parametrize("cap", [None, 1, 2])
def test_expert_choice_matches_column_sort(seed, shape, cf, cap):
    g, s, e = shape
    capacity = expert_capacity(s, e, 1, cf, 1)               # C = ceil(S · cf / E)
    logits = random_logits(seed, shape)
    out, stats = expert_choice_routing(jnp.asarray(logits), capacity, cap)
    slot_token, slot_weight, probs = ref_expert_choice(logits, capacity, cap)
    assert out.assignment is None
    close(out.probs, probs)
    check_plan(out.plan, stats, slot_token, slot_weight, np.full(g, float(e * capacity)), s)
    served = ref_served(slot_token, s)
    if cap is not None:
        assert served.max() <= cap
    # Token-level histogram (how many tokens got 0, 1, 2, ... experts).
    same(np.bincount(np.asarray(stats[0]).ravel(), minlength=e + 1),
         np.bincount(served.ravel(), minlength=e + 1))
    close(out.losses["router_z_loss"], ref_z_loss(logits), rtol=1e-5)


def test_expert_choice_token_histogram_is_uneven():
    """Zhou et al.: a token may get no expert or many. With random scores, S = 64, E = 8:
    cf 1 (C = 8) leaves some tokens with no expert while others get 2; cf 2 (C = 16) gives some
    token 3 or more. EC-CAP2 releases slots (they stay empty) and bounds every token at 2."""
    g, s, e = 1, 64, 8
    logits = jnp.asarray(random_logits(0, (g, s, e)))
    served_cf1 = np.asarray(expert_choice_routing(logits, 8)[1][0])
    assert (served_cf1 == 0).any() and served_cf1.max() >= 2
    capacity = expert_capacity(s, e, 1, 2.0, 1)              # 16
    served = np.asarray(expert_choice_routing(logits, capacity)[1][0])
    assert served.max() >= 3
    assert served.sum() == e * capacity                      # every slot filled without a cap
    capped_out, (capped_served, _, _) = expert_choice_routing(logits, capacity, 2)
    capped = capped_out.plan
    assert capped_served.max() <= 2
    assert np.sum(np.asarray(capped.slot_token) == s) == served.sum() - capped_served.sum() > 0
    same(np.asarray(capped.slot_weight)[np.asarray(capped.slot_token) == s], 0.0)


def test_expert_choice_cap_holds_with_tied_scores():
    """All-zero logits (zero-padded tokens, or a router initialised with std 0): every score is
    1/E, every expert takes tokens 0 and 1 (lax.top_k breaks ties by index), and with cap 1
    each of them must keep exactly one expert: served [1, 1, 0, ...]."""
    _, (served, _, _) = expert_choice_routing(jnp.zeros((1, 8, 4)), 2, 1)
    assert np.asarray(served).max() <= 1


def test_expert_choice_cap_at_least_num_experts_is_no_cap():
    logits = jnp.asarray(random_logits(1, (3, 16, 4)))
    a = expert_choice_routing(logits, 8)[0].plan
    b = expert_choice_routing(logits, 8, 4)[0].plan
    same(a.slot_token, b.slot_token)
    same(a.slot_weight, b.slot_weight)


# =============================================================================================
# 6. deepseek_v3_routing and update_selection_bias
# =============================================================================================

# (G, S, E, num_expert_groups, num_selected_groups, k), num_selected_groups · E/groups >= k.
DEEPSEEK_CASES = [(1, 5, 4, 1, 1, 1), (3, 16, 8, 1, 1, 3), (3, 16, 8, 2, 1, 2),
                  (3, 33, 8, 4, 2, 3), (1, 5, 8, 8, 3, 3)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("g, s, e, groups, selected, k", DEEPSEEK_CASES)
@pytest.mark.parametrize("renormalize, scaling", [(True, 2.5), (False, 1.0)])
def test_deepseek_v3_matches_per_token_loop(seed, g, s, e, groups, selected, k, renormalize,
                                            scaling):
    logits = random_logits(seed, (g, s, e))
    bias = np.random.default_rng(seed + 300).uniform(-0.3, 0.3, size=e).astype(np.float32)
    out = deepseek_v3_routing(jnp.asarray(logits), jnp.asarray(bias), k,
                              routed_scaling_factor=scaling, renormalize=renormalize,
                              num_expert_groups=groups, num_selected_groups=selected)
    index, gate, probs = ref_deepseek_v3(logits, bias, k, scaling, renormalize, groups,
                                         selected)
    a = out.assignment
    same(a.expert_index, index)
    close(a.gate, gate)
    same(a.valid, np.ones((g, s, k), bool))
    close(out.probs, probs)
    assert set(out.losses) == {"sequence_balance_loss"}


def test_deepseek_v3_bias_changes_selection_but_not_gates():
    """A nonzero bias moves some token's choice; the gates stay functions of s alone."""
    g, s, e, k = 3, 16, 8, 2
    logits = random_logits(0, (g, s, e))
    bias = np.random.default_rng(300).uniform(-0.3, 0.3, size=e).astype(np.float32)
    with_bias = deepseek_v3_routing(jnp.asarray(logits), jnp.asarray(bias), k).assignment
    without = deepseek_v3_routing(jnp.asarray(logits), None, k).assignment
    ref_with = ref_deepseek_v3(logits, bias, k)
    ref_without = ref_deepseek_v3(logits, None, k)
    assert not np.array_equal(ref_with[0], ref_without[0])
    same(with_bias.expert_index, ref_with[0])
    same(without.expert_index, ref_without[0])
    close(without.gate, ref_without[1])
    zero = deepseek_v3_routing(jnp.asarray(logits), jnp.zeros(e), k).assignment
    same(zero.expert_index, ref_without[0])


def test_deepseek_v3_group_limit_changes_selection():
    """Guards the group-limited cases against vacuity."""
    logits = random_logits(0, (3, 16, 8))
    bias = np.random.default_rng(300).uniform(-0.3, 0.3, size=8)
    free = ref_deepseek_v3(logits, bias, 3)[0]
    limited = ref_deepseek_v3(logits, bias, 3, num_groups=4, num_selected_groups=2)[0]
    assert not np.array_equal(free, limited)


def test_deepseek_v3_group_limited_by_hand():
    """E = 4 in 2 groups {0,1} {2,3}, one group kept, k = 2, no bias.

    s = [.9, .1, .6, .55]: group scores (top-2 sums) 1.0 vs 1.15, so group 1 wins even though
    expert 0 has the best affinity: experts [2, 3], gates [.6, .55] / 1.15.
    """
    s = np.array([0.9, 0.1, 0.6, 0.55])
    logits = jnp.asarray(np.log(s / (1 - s))[None, None].astype(np.float32))
    a = deepseek_v3_routing(logits, None, 2, num_expert_groups=2,
                            num_selected_groups=1).assignment
    same(a.expert_index, [[[2, 3]]])
    close(a.gate, [[[0.6 / 1.15, 0.55 / 1.15]]])
    ungrouped = deepseek_v3_routing(logits, None, 2).assignment
    same(ungrouped.expert_index, [[[0, 2]]])


def test_update_selection_bias_by_hand():
    """counts [10, 2, 6, 6], mean 6: expert 0 overloaded (b -= γ), expert 1 underloaded
    (b += γ), experts 2, 3 exactly balanced (unchanged)."""
    counts = jnp.array([10, 2, 6, 6], jnp.int32)
    close(update_selection_bias(jnp.zeros(4), counts, 0.001), [-0.001, 0.001, 0.0, 0.0])
    close(update_selection_bias(jnp.array([0.1, -0.2, 0.3, 0.0]), counts, 0.001),
          [0.099, -0.199, 0.3, 0.0])
    close(update_selection_bias(jnp.array([0.1, -0.2, 0.3, 0.0]), counts, 0.0),
          [0.1, -0.2, 0.3, 0.0])


# =============================================================================================
# 7. dense_routing
# =============================================================================================

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(1, 5, 2), (3, 16, 4), (3, 33, 8)],
                         ids=lambda sh: "G{}S{}E{}".format(*sh))
def test_dense_routing_uses_every_expert(seed, shape):
    g, s, e = shape
    logits = random_logits(seed, shape)
    out = dense_routing(jnp.asarray(logits))
    probs = np.array([[ref_softmax(logits[i, t]) for t in range(s)] for i in range(g)])
    same(out.assignment.expert_index, np.broadcast_to(np.arange(e), (g, s, e)))
    close(out.assignment.gate, probs)
    same(out.assignment.valid, np.ones((g, s, e), bool))
    close(out.probs, probs)
    close(out.losses["router_z_loss"], ref_z_loss(logits), rtol=1e-5)


# =============================================================================================
# 8. route: dispatch by MoeConfig.router, plan only with a capacity
# =============================================================================================

def family_reference(cfg, logits, key, noise_logits, bias):
    """(expert_index, gate, valid, probs, priority) of the family that cfg names."""
    g, s, e = logits.shape
    k = cfg.num_selected_experts
    ones = np.ones((g, s, k), bool)
    if cfg.router == "top_k":
        index, gate, probs, _ = ref_top_k(logits, k, cfg.gate_order, cfg.renormalize_gates)
        return index, gate, ones, probs, (probs.max(-1) if cfg.batch_prioritized else None)
    if cfg.router == "gshard":
        index, gate, valid, probs = ref_gshard(logits,
                                               np.asarray(uniform(key, (g, s))))
        return index, gate, valid, probs, (probs.max(-1) if cfg.batch_prioritized else None)
    if cfg.router == "noisy_top_k":
        z = np.asarray(normal(key, logits.shape))
        index, gate, full, _ = ref_noisy_top_k(logits, noise_logits, z, k)
        return index, gate, ones, full, None
    if cfg.router == "deepseek_v3":
        index, gate, probs = ref_deepseek_v3(
            logits, bias, k, cfg.routed_scaling_factor, cfg.renormalize_gates,
            cfg.num_expert_groups, cfg.num_selected_groups)
        return index, gate, ones, probs, None
    if cfg.router == "dense":
        probs = np.array([[ref_softmax(row) for row in grp] for grp in logits])
        return (np.broadcast_to(np.arange(e), (g, s, e)), probs, np.ones((g, s, e), bool),
                probs, None)
    raise AssertionError(cfg.router)


ROUTE_CASES = [
    dict(router="top_k", num_selected_experts=1),
    dict(router="top_k", num_selected_experts=2, gate_order="top_k_then_softmax"),
    dict(router="top_k", num_selected_experts=2, renormalize_gates=True),
    dict(router="top_k", num_selected_experts=1, batch_prioritized=True),
    dict(router="top_k", num_selected_experts=2, batch_prioritized=True),
    dict(router="gshard", num_selected_experts=2),
    dict(router="gshard", num_selected_experts=2, batch_prioritized=True),
    dict(router="noisy_top_k", num_selected_experts=2),
    dict(router="deepseek_v3", num_selected_experts=2, renormalize_gates=True,
         routed_scaling_factor=2.5, num_expert_groups=4, num_selected_groups=2),
    dict(router="deepseek_v3", num_selected_experts=3),
    dict(router="dense"),
]


@pytest.mark.parametrize("case", ROUTE_CASES,
                         ids=lambda c: "-".join(str(v) for v in c.values()))
def test_route_dispatches_to_the_family(case):
    g, s, e, capacity = 3, 16, 8, 3
    cfg = MoeConfig(num_experts=e, **case)
    logits = random_logits(11, (g, s, e))
    noise_logits = random_logits(12, (g, s, e), scale=1.0)
    bias = np.random.default_rng(13).uniform(-0.3, 0.3, size=e).astype(np.float32)
    key = jax.random.PRNGKey(14)
    inputs = dict(key=key, extra_logits={"w_noise": jnp.asarray(noise_logits)},
                  bias=jnp.asarray(bias))
    out, stats = route(cfg, jnp.asarray(logits), capacity=capacity, **inputs)
    index, gate, valid, probs, priority = family_reference(cfg, logits, key, noise_logits, bias)
    same(out.assignment.expert_index, index)
    close(out.assignment.gate, gate)
    same(out.assignment.valid, valid)
    close(out.probs, probs)
    check_plan(out.plan, stats, *ref_plan(index, gate, valid, e, capacity, priority), s)
    # Dropless (capacity=None): the same decisions and no plan (traced only, not compiled).
    dropless = jax.eval_shape(
        functools.partial(_routing.route, cfg, capacity=None, **inputs), jnp.asarray(logits))
    assert dropless.plan is None
    assert dropless.assignment.expert_index.shape == index.shape


@pytest.mark.parametrize("cap", [None, 2])
def test_route_expert_choice(cap):
    g, s, e, capacity = 3, 16, 8, 4
    cfg = MoeConfig(router="expert_choice", num_experts=e,
                    expert_choice_max_experts_per_token=cap)
    logits = random_logits(21, (g, s, e))
    out, stats = route(cfg, jnp.asarray(logits), capacity=capacity)
    slot_token, slot_weight, probs = ref_expert_choice(logits, capacity, cap)
    assert out.assignment is None
    close(out.probs, probs)
    check_plan(out.plan, stats, slot_token, slot_weight, np.full(g, float(e * capacity)), s)


def test_route_loss_names_per_family():
    logits = jnp.asarray(random_logits(0, (1, 8, 4)))
    key = jax.random.PRNGKey(0)
    expected = {
        "top_k": {"load_balance_loss", "router_z_loss"},
        "gshard": {"load_balance_loss", "router_z_loss"},
        "noisy_top_k": {"importance_loss", "load_loss", "router_z_loss"},
        "deepseek_v3": {"sequence_balance_loss"},
        "dense": {"router_z_loss"},
        "expert_choice": {"router_z_loss"},
    }
    for router, names in expected.items():
        cfg = MoeConfig(router=router, num_experts=4, num_selected_experts=2)
        out = jax.eval_shape(functools.partial(
            _routing.route, cfg, capacity=4, key=key,
            extra_logits={"w_noise": jnp.zeros_like(logits)},
            bias=jnp.zeros(4)), logits)
        assert set(out.losses) == names, router


def test_route_soft_moe_has_no_routing_function():
    with pytest.raises(ValueError, match="soft_moe"):
        route(MoeConfig(router="soft_moe"), jnp.zeros((1, 4, 8)), capacity=None)


# =============================================================================================
# Batch-prioritized routing: V-MoE priority is the top-1 router probability.
# =============================================================================================

@pytest.mark.parametrize("gate_order, renormalize, k", [
    ("softmax_then_top_k", False, 1),
    ("softmax_then_top_k", False, 2),
    ("top_k_then_softmax", False, 1),
    ("top_k_then_softmax", False, 2),
    ("softmax_then_top_k", True, 1),
    ("softmax_then_top_k", True, 2),
])
def test_batch_prioritized_uses_top1_router_probability(gate_order, renormalize, k):
    """V-MoE (Riquelme et al. 2021; vmoe's _get_top_experts_per_item_common sorts by the top-1
    softmax gate): tokens take capacity in descending order of max_e p(e | x)."""
    g, s, e, capacity = 3, 33, 4, 3
    logits = random_logits(8, (g, s, e))
    cfg = MoeConfig(router="top_k", num_experts=e, num_selected_experts=k,
                    gate_order=gate_order, renormalize_gates=renormalize,
                    batch_prioritized=True)
    out, _ = route(cfg, jnp.asarray(logits), capacity=capacity)
    index, gate, _, top1 = ref_top_k(logits, k, gate_order, renormalize)
    slot_token, slot_weight, _ = ref_plan(index, gate, np.ones(index.shape, bool), e, capacity,
                                          top1)
    same(out.plan.slot_token, slot_token)
    close(out.plan.slot_weight, slot_weight)


@pytest.mark.parametrize("k", [1, 2, 4, 5, 7])
def test_top_k_matches_a_stable_descending_sort_with_ties_and_minus_infinity(k):
    """Both paths of moejax.routing.select.top_k (rounds of max for k <= 4, a sort above):
    largest first, ties to the lower index, -inf entries taken like any other value (never an
    index twice, NaN included), and gradients flow to the chosen entries only."""
    from moejax.routing.select import top_k
    rng = np.random.default_rng(k)
    x = rng.integers(0, 4, size=(3, 5, 7)).astype(np.float32)          # many ties
    x[0, 0] = -np.inf                                                  # a row of -inf
    x[1, 2, [1, 4, 5]] = -np.inf
    values, index = top_k(jnp.asarray(x), k)
    for g in range(3):
        for s in range(5):
            order = sorted(range(7), key=lambda e: (-x[g, s, e], e))[:k]
            assert list(np.asarray(index[g, s])) == order
            np.testing.assert_array_equal(np.asarray(values[g, s]), x[g, s, order])
    nan = jnp.asarray(x[2]).at[:, 3].set(jnp.nan)                      # a diverged router
    _, nan_index = top_k(nan, k)
    assert all(len(set(np.asarray(row).tolist())) == k for row in nan_index)
    grad = jax.grad(lambda x: jnp.sum(top_k(x, k)[0] * jnp.arange(1.0, k + 1)))(
        jnp.asarray(rng.normal(size=(2, 7)).astype(np.float32)))
    assert np.count_nonzero(np.asarray(grad)) == 2 * k
