"""Verdicts on made-up runs: paired 95% intervals (against scipy), the validity gate, how parts
combine, and every recipe's judge, each outcome reached (held, did not hold, inconclusive, not
testable at this budget)."""

import numpy as np
import pytest
from scipy import stats

from experiments import recipes
from experiments.recipes import gate as gate_lib
from experiments.recipes import paired
from experiments.recipes import recipe as recipe_lib
from experiments.recipes import runs as runs_lib
from experiments.recipes import summary
from experiments.recipes.recipe import HELD, INCONCLUSIVE, NOT_HELD, NOT_TESTABLE
from moejax.errors import ConfigError

PASSING = gate_lib.Gate("dense", width_gain=0.12, encoder_information=0.6, encoder_decoder=True,
                        encoder_information_midway=0.4)
FAILING = gate_lib.Gate("dense", width_gain=0.012, encoder_information=0.036,
                        encoder_decoder=True)


def _run(final, seed, diverged=False, curve=None, **fields):
    values = dict(dropped_fraction=None, load_cv=None, max_violation=None, router_z=None,
                  router_entropy=None, tokens_per_second=None, expert_load=None,
                  experts_per_token=None)
    values.update(fields)
    return summary.RunResult(
        directory="", diverged=diverged, size="tiny", tokens_per_step=100, examples_per_step=4,
        eval_curve=curve or [(0, 6.0), (100, 4.0), (200, final)],
        train_curve=[(100, 4.0, 1.0), (200, final, 2.0)], final_loss=final, seed=seed,
        **values)


def _arm(label, finals, diverged=(), per_seed=None, **fields):
    """A Summary whose seed i ends at finals[i] (curve 6 -> 4 -> final at steps 0, 100, 200);
    per_seed: {field: [value per seed]}."""
    runs = []
    for i, final in enumerate(finals):
        extra = {k: v[i] for k, v in (per_seed or {}).items()}
        runs.append(_run(final, i, i in diverged, **fields, **extra))
    return summary.Summary(label, runs)


# --- paired intervals --------------------------------------------------------------------

def test_t_quantiles_match_scipy():
    for df in range(1, 31):
        assert paired.t_quantile(df) == pytest.approx(stats.t.ppf(0.975, df), abs=5e-4)
    assert paired.t_quantile(500) == pytest.approx(stats.t.ppf(0.975, 500), abs=5e-3)


def test_paired_interval_matches_scipy_and_hand_worked():
    a, b = [3.0, 3.1, 2.9], [3.2, 3.25, 3.1]
    diff = paired.paired_difference(a, b)
    # d = (−0.2, −0.15, −0.2): mean −0.18333, sd 0.028868, half width 4.303·sd/√3 = 0.07172
    assert diff.mean == pytest.approx(-0.183333, abs=1e-6)
    assert diff.half_width == pytest.approx(0.07172, abs=1e-4)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (diff.low, diff.high) == pytest.approx((ci.low, ci.high), abs=2e-4)
    assert diff.lower() is True and paired.paired_difference(b, a).lower() is False
    one = paired.paired_difference([3.0], [3.5])
    assert one.half_width is None and one.lower() is None and "no interval" in one.text()


def test_runs_pair_by_seed_and_skip_diverged():
    a = summary.Summary("a", [_run(2.9, 1), _run(3.0, 0), _run(9.0, 2, diverged=True)])
    b = summary.Summary("b", [_run(3.0, 0), _run(3.1, 1), _run(3.0, 2)])
    diff = paired.paired_runs(a, b)
    assert diff.n == 2 and diff.mean == pytest.approx(-0.1)      # seeds 0 and 1 only


@pytest.mark.parametrize("moe, outcome", [
    ([2.8, 2.92, 2.71], HELD),             # d = −0.20, −0.18, −0.19: the interval is below 0
    ([3.2, 3.28, 3.1], NOT_HELD),          # above 0
    ([2.9, 3.2, 2.95], INCONCLUSIVE),      # d = −0.1, +0.1, +0.05: contains 0
])
def test_paired_part_reaches_each_outcome(moe, outcome):
    dense = _arm("dense", [3.0, 3.1, 2.9])
    part = recipe_lib.paired_part(PASSING, "MoE beats dense", _arm("m", moe), dense,
                                  "MoE − dense")
    verdict = recipe_lib.combine([part])
    assert verdict.outcome == outcome
    assert verdict.why.endswith("MoE beats dense (MoE − dense " + paired.describe(
        _arm("m", moe), dense) + ").") and "3 seeds" in verdict.why
    untested = recipe_lib.combine([recipe_lib.paired_part(FAILING, "MoE beats dense",
                                                          _arm("m", moe), dense, "MoE − dense")])
    assert untested.outcome == NOT_TESTABLE
    assert untested.why.startswith("Not testable at this budget: MoE beats dense")


@pytest.mark.parametrize("offsets, both_sides, outcome", [
    ([0.001, -0.002, 0.0], True, HELD),          # inside ±0.02
    ([0.10, 0.12, 0.11], True, NOT_HELD),         # wholly beyond +0.02
    ([0.0, 0.03, -0.02], True, INCONCLUSIVE),     # half width 0.0625 straddles the margin
    ([-0.2, -0.25, -0.22], False, HELD),          # far better is no worse
    ([-0.2, -0.25, -0.22], True, NOT_HELD),       # ... but does not match
])
def test_within_part(offsets, both_sides, outcome):
    b = _arm("b", [3.0, 3.1, 2.9])
    a = _arm("a", [x + d for x, d in zip([3.0, 3.1, 2.9], offsets)])
    part = recipe_lib.within_part(PASSING, "a matches b", a, b, 0.02, both_sides=both_sides)
    assert recipe_lib.combine([part]).outcome == outcome


def test_combine_priority():
    combine = lambda *oks: recipe_lib.combine([(f"p{i}", ok) for i, ok in enumerate(oks)])
    untestable = recipe_lib.UNTESTABLE
    assert combine(True, True).outcome == HELD
    assert combine(True, None).outcome == INCONCLUSIVE
    assert combine(True, None, untestable).outcome == NOT_TESTABLE
    assert combine(False, None, untestable).outcome == NOT_HELD
    why = combine(True, False, None, untestable).why
    assert why == ("Held: p0. Did not hold: p1. Inconclusive: p2. "
                   "Not testable at this budget: p3.")


# --- the validity gate ----------------------------------------------------------------------

def test_gate_figures_and_thresholds():
    def gate(standard, wide, information, midway=0.4, encoder_decoder=True, diverged=False):
        curve = [(0, 0.0), (100, 0.1), (500, midway), (900, 0.9 * information),
                 (1000, information)] if information is not None else []
        return gate_lib.from_runs(
            "dense", _run(standard, 0, encoder_information=information, encoder_curve=curve),
            _run(wide, 0, diverged=diverged), encoder_decoder)
    ok = gate(2.40, 2.30, 0.5)                                       # gain 0.10, info 0.5
    assert ok.passed and ok.encoder_information_midway == 0.4        # step 500 of 1000
    narrow = gate(2.40, 2.38, 0.5)
    assert narrow.width_gain == pytest.approx(0.02) and not narrow.passed
    deaf = gate(2.40, 2.30, 0.036, midway=0.02)
    assert not deaf.passed and deaf.width_passed and not deaf.encoder_passed
    assert ("encoder information 0.036 nats at the end and 0.020 nats half-way (needs >= 0.3 "
            "at both)") in deaf.text()
    assert "width gain (8× d_ff) 0.100 nats (needs >= 0.05)" in deaf.text()
    # reads its encoder at the end, but only started after half the budget: arms that start
    # later still would compare when they started, not what their FFNs add
    late = gate(2.40, 2.30, 0.5, midway=0.1)
    assert late.encoder_information == 0.5 and not late.encoder_passed and not late.passed
    decoder = gate(1.94, 1.84, None, encoder_decoder=False)          # no encoder to read
    assert decoder.passed and "encoder" not in decoder.text()
    lost = gate(2.40, 9.0, 0.5, diverged=True)
    assert lost.width_gain is None and not lost.passed and "not measured" in lost.text()


def test_gate_judges_width_where_the_arms_put_experts():
    """With a placement, the gain of widening only the arms' sparse FFNs must pass; every
    FFN's gain is reported beside it."""
    curve = [(500, 0.4), (1000, 0.5)]
    standard = _run(2.40, 0, encoder_information=0.5, encoder_curve=curve)
    def gate(placed_final, placement="encoder layer 1", diverged=False):
        return gate_lib.from_runs("dense", standard, _run(2.30, 0), True, "",
                                  _run(placed_final, 0, diverged=diverged), placement)
    one_ffn = gate(2.39)                     # every FFN 8×: 0.10; the experts' FFN alone: 0.01
    assert one_ffn.width_gain == pytest.approx(0.10)
    assert one_ffn.placement_gain == pytest.approx(0.01)
    assert not one_ffn.width_passed and not one_ffn.passed and one_ffn.encoder_passed
    assert ("width gain (8× d_ff) 0.100 nats in every FFN and 0.010 nats in the arms' sparse "
            "FFNs alone (encoder layer 1) (needs >= 0.05 there)") in one_ffn.text()
    assert gate(2.34).passed                                  # 0.06 there
    assert not gate(2.30, diverged=True).passed               # not measured: not passed
    assert "and not measured in the arms'" in gate(2.30, diverged=True).text()
    # no placement (the arms make every FFN sparse): the every-FFN gain is the one judged
    assert gate(2.39, placement="").passed and gate(2.39, placement="").placement_gain is None


def test_gate_runs_widen_the_ffn_and_log_encoder_information():
    specs = gate_lib.gate_runs("dense", "tiny", {})
    standard, wide = specs[gate_lib.STANDARD], specs[gate_lib.WIDE]
    assert dict(wide.overrides)["model.d_ff"] == 8 * 256
    assert dict(standard.overrides)["train.eval_encoder_information"] is True
    decoder = gate_lib.gate_runs("glam+model.moe_layout=none", "tiny", {})
    assert "train.eval_encoder_information" not in dict(decoder[gate_lib.STANDARD].overrides)
    # the gate's own overrides win over the recipe's common ones (a smoke run's micro sizes)
    plan = gate_lib.plan("dense", size="tiny", seed=3, cache="/nonexistent",
                         common={"model.d_ff": 64, "train.eval_encoder_information": False})
    configs = {t.run.label: t.config for t in plan.tasks}
    assert configs[gate_lib.WIDE].model.d_ff == 512 and configs[gate_lib.STANDARD].model.d_ff == 64
    assert all(c.train.eval_encoder_information and c.train.seed == 3 for c in configs.values())
    assert plan.directory.startswith("/nonexistent/") and plan.encoder_decoder
    # a placement that leaves FFNs dense adds the run with only its sparse ones 8× wider
    placed = gate_lib.gate_runs("dense", "tiny", {}, placement="switch+model.moe_stacks=encoder")
    label = "d_ff x8 at encoder layer 1"
    assert list(placed) == [gate_lib.STANDARD, gate_lib.WIDE, label]
    assert dict(placed[label].overrides)["moe.hidden_dim"] == 8 * 256
    assert len(gate_lib.gate_runs("dense", "tiny", {}, "switch+model.moe_every=1")) == 2  # all
    with pytest.raises(ConfigError, match="must be a dense model"):
        gate_lib.gate_runs("switch", "tiny", {})
    plan = gate_lib.plan("dense", size="tiny_lm", seed=0, cache="/nonexistent", common={},
                         placement="switch")
    assert plan.placement == "decoder layers 1, 3" and len(plan.tasks) == 3
    assert plan.tasks[-1].run.label == gate_lib.STANDARD          # the wide ones first
    key = gate_lib.regime_key('{"b": 1, "a": [2]}')
    assert key == gate_lib.regime_key('{"a": [2], "b": 1}') != gate_lib.regime_key('{"a": 1}')


# --- each recipe's judge ----------------------------------------------------------------------

DENSE = [3.0, 3.1, 2.9]


def test_switch_verdict():
    from experiments.recipes import switch
    dense = _arm("dense", DENSE)
    # every E ends lower on every seed, more experts lower still
    moes = [_arm(f"E{e}", [x - gap + j for x, j in zip(DENSE, (0.0, 0.01, -0.01))])
            for e, gap in zip(switch.EXPERTS, (0.2, 0.4, 0.6, 0.8))]
    outcome = switch.judge([dense] + moes, PASSING)
    assert outcome.verdict.outcome == HELD, outcome.verdict.why
    assert outcome.target == pytest.approx(3.0)
    # E=4, seed 0: the dense model reaches 3.0 at step 200, the MoE (2.8) at
    # 100 + 100·(4 − 3)/(4 − 2.8) = 183.3 (1.0909×); seed 1 (3.1 vs 2.91):
    # 100 + 100·0.9/1.09 = 182.6 (1.0955×); seed 2 (2.9 vs 2.69): 100 + 100·1.1/1.31 = 184.0
    # (1.0872×); mean 1.0912
    speedups = switch.seed_speedups(moes[0], dense)
    assert speedups == pytest.approx([200 / 183.333, 200 / 182.569, 200 / 183.969], rel=1e-4)
    assert "E=4 beats dense: 1.09×" in outcome.verdict.why
    assert switch.judge([dense] + moes, FAILING).verdict.outcome == NOT_TESTABLE
    worse = [_arm("w", [x + 0.1 + j for x, j in zip(DENSE, (0.0, 0.01, -0.01))])] + moes[1:]
    assert switch.judge([dense] + worse, PASSING).verdict.outcome == NOT_HELD
    tie = switch.judge([dense, _arm("t", [3.01, 3.08, 2.92])] + moes[1:], PASSING).verdict
    assert tie.outcome == INCONCLUSIVE and "E=4 beats dense" in tie.why


def test_precision_verdict():
    from experiments.recipes import precision as pr
    f32 = _arm(pr.F32, DENSE)
    unstable_bf16 = _arm(pr.BF16, [9.0, 3.1, 2.9], diverged=(0,))
    selective = _arm(pr.SELECTIVE, [3.001, 3.098, 2.9])             # within ±0.02 of f32
    init01 = _arm(pr.INIT_01, [2.9, 3.0, 2.8])                       # std 0.1
    init1 = _arm(pr.INIT_1, [3.25, 3.4, 3.05])                       # d = −0.35, −0.4, −0.25

    def judge(bf16, init1, gate=PASSING):
        return pr.judge([f32, bf16, selective, init01, init1], gate).verdict

    held = judge(unstable_bf16, init1)
    assert held.outcome == HELD, held.why
    assert "1/3 runs diverged" in held.why and "std 0.1756 vs 0.1000" in held.why
    # a stable bfloat16 router that matches selective precision fails the claim
    assert judge(_arm(pr.BF16, [3.0, 3.1, 2.9]), init1).outcome == NOT_HELD
    # init 1.0 no different from 0.1 on average: undecided, not failed
    tied = judge(unstable_bf16, _arm(pr.INIT_1, [2.95, 3.1, 2.65]))
    assert tied.outcome == INCONCLUSIVE and "Inconclusive: init 0.1 beats" in tied.why
    # the gate rules out the quality parts, not the divergence
    untested = judge(unstable_bf16, init1, FAILING)
    assert untested.outcome == NOT_TESTABLE and untested.why.startswith("Held: the bfloat16")


def test_capacity_verdict():
    from experiments.recipes import capacity

    def arms(losses_125, drops=(0.3, 0.2, 0.1), top1_speeds=(1000, 900, 800)):
        out = []
        for k in capacity.K:
            for cf, drop, speed in zip(capacity.FACTORS, drops, top1_speeds):
                finals = losses_125 if (k, cf) == (1, 1.25) else DENSE
                out.append(_arm(capacity.label(k, cf), finals, dropped_fraction=drop,
                                tokens_per_second=speed / k, expert_load=np.ones((1, 4)) / 4))
        return out
    # only top-1 cf 1.0 is faster than top-1 cf 1.25; cf 1.25 is measurably better than it
    better = [x - 0.05 + j for x, j in zip(DENSE, (0.0, 0.005, -0.005))]
    assert capacity.judge(arms(better), PASSING).verdict.outcome == HELD
    worse = [x + 0.05 + j for x, j in zip(DENSE, (0.0, 0.005, -0.005))]
    off = capacity.judge(arms(worse), PASSING).verdict
    assert off.outcome == NOT_HELD and "Did not hold: Switch at cf 1.0" in off.why
    same = capacity.judge(arms(DENSE), PASSING).verdict
    assert same.outcome == INCONCLUSIVE
    assert capacity.judge(arms(better), FAILING).verdict.outcome == NOT_TESTABLE
    # mechanics fail whatever the gate says: slower at cf 1.0 than at 2.0, or more drops
    assert capacity.judge(arms(better, top1_speeds=(700, 900, 800)), FAILING
                          ).verdict.outcome == NOT_HELD
    assert capacity.judge(arms(better, drops=(0.1, 0.2, 0.0)), PASSING).verdict.outcome \
        == NOT_HELD
    # speeds with run-to-run noise: top-1 cf 1.0 ahead of top-2 cf 1.0 on average (10400 vs
    # 10100 tokens/s) but the paired differences (+900, −600, +600) give 300 ± 4.303 · 793.7 /
    # √3 = 300 ± 1972: undecided, where comparing means would call it held
    noisy = arms(better)
    noisy[0] = _arm(capacity.label(1, 1.0), DENSE, dropped_fraction=0.3,
                    expert_load=np.ones((1, 4)) / 4,
                    per_seed={"tokens_per_second": [11000, 9600, 10600]})
    noisy[3] = _arm(capacity.label(2, 1.0), DENSE, dropped_fraction=0.3,
                    expert_load=np.ones((1, 4)) / 4,
                    per_seed={"tokens_per_second": [10100, 10200, 10000]})
    out = capacity.judge(noisy, PASSING).verdict
    assert out.outcome == INCONCLUSIVE
    assert "Inconclusive: top-1 is faster than top-2 at every capacity factor" in out.why
    assert "cf 1 +300 [-1672, +2272], 3 seeds" in out.why
    # top-2 cf 1.0 slower on average than top-1 at 1.0 and 1.25 (883 against 1000 and 900
    # tokens/s) but not measurably (differences from 1.25: +100, −200, +50), and measurably
    # better: Switch is not on the frontier (comparing mean speeds would leave it there)
    ahead = arms(better)
    ahead[3] = _arm(capacity.label(2, 1.0), [x - 0.1 for x in better],
                    dropped_fraction=0.3, expert_load=np.ones((1, 4)) / 4,
                    per_seed={"tokens_per_second": [1000, 700, 950]})
    off_frontier = capacity.judge(ahead, PASSING).verdict
    assert off_frontier.outcome == NOT_HELD
    assert "Did not hold: Switch at cf 1.0 and 1.25 gives the best quality" in off_frontier.why


def test_expert_choice_verdict():
    from experiments.recipes import expert_choice as ec
    top2 = _arm(ec.TOP2, DENSE)
    top1 = _arm(ec.TOP1, [x + 0.2 for x in DENSE])

    def ec_arm(at_100, future=(0.002, 0.0, 0.009), encoder_decoder=False):
        """Expert choice whose loss at step 100 (half of top-2's 200) is at_100[i], in a
        decoder with future information future[i] (None: not logged)."""
        return summary.Summary(ec.EC, [_run(x - 0.5, i, curve=[(0, 6.0), (100, x), (200, x - 0.5)],
                                            future_information=f, encoder_decoder=encoder_decoder)
                                       for i, (x, f) in enumerate(zip(at_100, future))])
    held = ec.judge([ec_arm([2.6, 2.72, 2.5]), top2, top1], PASSING).verdict
    assert held.outcome == HELD, held.why
    # in a causal decoder, a seed whose predictions take 0.01 nats or more from later tokens
    # (or none logged) makes the quality claim untestable: its loss may read the future
    leaky = ec.judge([ec_arm([2.6, 2.72, 2.5], (0.002, 0.012, 0.0)), top2, top1], PASSING)
    assert leaky.verdict.outcome == NOT_TESTABLE
    assert "future information up to 0.0120 nats per token; needs < 0.01" in leaky.verdict.why
    unlogged = ec.judge([ec_arm([2.6, 2.72, 2.5], (0.0, None, 0.0)), top2, top1], PASSING)
    assert unlogged.verdict.outcome == NOT_TESTABLE and "not logged" in unlogged.verdict.why
    # in an encoder (the T5 sizes) expert choice sees no later target: no check
    encoder = ec_arm([2.6, 2.72, 2.5], (None,) * 3, encoder_decoder=True)
    assert ec.judge([encoder, top2, top1], PASSING).verdict.outcome == HELD
    assert ec.judge([ec_arm([3.4, 3.5, 3.3]), top2, top1], PASSING).verdict.outcome == NOT_HELD
    close = ec.judge([ec_arm([3.01, 3.08, 2.905]), top2, top1], PASSING).verdict
    assert close.outcome == INCONCLUSIVE
    assert ec.judge([ec_arm([2.6, 2.72, 2.5]), top2, top1], FAILING).verdict.outcome == \
        NOT_TESTABLE
    # the default curve (6 -> 4 -> final): at step 100 expert choice is at 4.0, a nat short
    slow = ec.judge([_arm(ec.EC, [2.0, 2.1, 1.9], future_information=0.0), top2, top1],
                    PASSING).verdict
    assert slow.outcome == NOT_HELD and "+1.0000" in slow.why
    # the step-time ratio comes with the paired interval of tokens/s: d = (200, 100, 300),
    # mean 200, sd 100, half width 4.303 · 100 / √3 = 248.4
    timed = ec.judge([_arm(ec.EC, [2.0, 2.1, 1.9], future_information=0.0,
                           per_seed={"tokens_per_second": [1200, 1100, 1300]}),
                      _arm(ec.TOP2, DENSE, per_seed={"tokens_per_second": [1000] * 3}), top1],
                     PASSING).verdict
    assert "1.20× the time" in timed.why and "+200 [-48, +448], 3 seeds" in timed.why
    diverged = _arm(ec.EC, [9.0] * 3, diverged=(0, 1, 2))
    assert ec.judge([diverged, top2, top1], PASSING).verdict.outcome == INCONCLUSIVE


def test_loss_free_stability_upcycle_routing_verdicts():
    from experiments.recipes import loss_free, routing, stability, upcycle
    aux = _arm(loss_free.AUX, DENSE, per_seed={"max_violation": [0.7, 0.8, 0.65]})
    free = lambda offsets: _arm(loss_free.LOSS_FREE, [x + d for x, d in zip(DENSE, offsets)],
                                per_seed={"max_violation": [0.1, 0.12, 0.09]})
    assert loss_free.judge([free([0.001, -0.003, 0.002]), aux], PASSING).verdict.outcome == HELD
    assert loss_free.judge([free([0.2, 0.22, 0.19]), aux], PASSING).verdict.outcome == NOT_HELD
    # balance is mechanics: it holds even where quality cannot be tested
    untested = loss_free.judge([free([0.001, -0.003, 0.002]), aux], FAILING).verdict
    assert untested.outcome == NOT_TESTABLE and untested.why.startswith("Held: loss-free")

    # z-loss: 3/3 stable; none: one diverged; on the two seeds both ran, z-loss − none is
    # −0.010 and −0.012: the interval [−0.0237, +0.0017] lies below +0.02
    z = _arm(stability.Z, [3.0, 3.1, 3.0], router_z=5.0)
    none = _arm(stability.NONE, [3.01, 9.0, 3.012], diverged=(1,), router_z=20.0)
    assert stability.judge([none, z], PASSING).verdict.outcome == HELD
    calm = stability.judge([_arm(stability.NONE, [3.0] * 3, router_z=20.0),
                            _arm(stability.Z, [3.0] * 3, router_z=5.0)], PASSING)
    assert calm.verdict.outcome == INCONCLUSIVE

    up = _arm(upcycle.UPCYCLED, [3.0, 3.05, 2.95])
    arms = [_arm(upcycle.PRETRAINED, [3.5] * 3), _arm(upcycle.CONTINUED, [3.2, 3.22, 3.18]),
            up, _arm(upcycle.SCRATCH, [3.4, 3.45, 3.38])]
    assert upcycle.judge(arms, PASSING).verdict.outcome == HELD
    arms[2] = _arm(upcycle.UPCYCLED, [3.3, 3.33, 3.28])
    assert upcycle.judge(arms, PASSING).verdict.outcome == NOT_HELD

    families = [_arm(label, [x - 0.1 for x in DENSE], expert_load=np.ones((1, 4)) / 4)
                for label in routing.FAMILIES.values()]
    routed = routing.judge(families + [_arm(routing.DENSE, DENSE)], PASSING).verdict
    assert routed.outcome == HELD and "Switch top-1 beats the dense model" in routed.why
    assert routing.judge(families + [_arm(routing.DENSE, DENSE)], FAILING).verdict.outcome \
        == NOT_TESTABLE



@pytest.mark.parametrize("name", recipes.RECIPES)
def test_every_recipes_gate_backbone_builds(name):
    """The gate's two configs validate at tiny size (a spec's 'none' stays a string where the
    field is one, e.g. model.moe_layout=none), and at the size the recipe runs its placement
    makes sparse exactly the FFNs its MoE arms do."""
    recipe = recipes.load(name)
    plan = gate_lib.plan(recipe.gate_backbone, size="tiny", seed=0, cache="/nonexistent",
                         common={})
    assert [t.config.model.moe_layout for t in plan.tasks] == ["none", "none"]   # dense
    size = recipe_lib.config_size(recipe, "tiny")
    placement = set(_sparse_ffns(runs_lib.load_config(recipe.gate_placement, size)))
    arms = [runs_lib.load_config(a.spec, size, dict(a.overrides)) for a in recipe.arms(size)]
    layouts = {frozenset(_sparse_ffns(c)) for c in arms if c.model.moe_layout != "none"}
    assert layouts == {frozenset(placement)} and placement


def _sparse_ffns(config):
    """The FFNs a config makes sparse (or dense at an MoE's width, moe_as_dense), by position."""
    from moejax.models.config import ModelConfig, ffn_pattern
    model = ModelConfig.from_dict({**dict(config.model.items()), "vocab_size": 256,
                                   "moe": dict(config.moe.items())})
    return [(stack, i) for stack, depth in model.stack_depths().items()
            for i, kind in enumerate(ffn_pattern(model, depth, stack)) if kind == "moe"]


def test_the_placement_run_differs_from_the_standard_only_in_the_widened_ffns():
    """Common random numbers: at micro size, the initial weights of the gate's placement run
    equal the standard run's layer by layer, except the FFNs at the placement, 8× as wide."""
    from flax import nnx
    from moejax.data import make_tokenizer
    from moejax.models import init_model
    from moejax.train.config import resolve
    plan = gate_lib.plan("dense", size="tiny", seed=0, cache="/nonexistent",
                         common=dict(recipe_lib.SMOKE), placement="switch+model.moe_stacks=encoder")
    layers = {}
    for task in plan.tasks:
        if task.run.label == gate_lib.WIDE:
            continue
        model = init_model(resolve(task.config, make_tokenizer(task.config.data).vocab_size), 0)
        layers[task.run.label] = _per_layer(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    standard, placed = layers.pop(gate_lib.STANDARD), layers.popitem()[1]
    assert standard.keys() == placed.keys() and ("encoder", 1, "ffn/wo") in standard
    d_ff = plan.tasks[-1].config.model.d_ff
    for key, weight in standard.items():
        if key[:2] == ("encoder", 1) and key[2].startswith("ffn/"):
            assert placed[key].shape[-1 if key[2] != "ffn/wo" else 0] == 8 * d_ff
        else:
            np.testing.assert_array_equal(weight, placed[key], err_msg=str(key))


def _per_layer(flat):
    """{(stack, layer, field): weight} from an nnx state whose repeated layers are stacked
    in segments: <stack>/segments/<s>/blocks/layers/<position>/<field> of shape [repeats, ...]
    (layer order: segment, then repeat, then position within the repeated block)."""
    by_place = {}
    for path, variable in flat:
        path = [str(p) for p in path]
        if "segments" not in path:
            by_place["/".join(path)] = np.asarray(variable.get_value())
            continue
        at = path.index("segments")
        stack, segment, position = "/".join(path[:at]), int(path[at + 1]), int(path[at + 4])
        for repeat, weight in enumerate(np.asarray(variable.get_value())):
            by_place.setdefault((stack, segment, repeat, position), {})["/".join(
                path[at + 5:])] = weight
    layers = {(k,): v for k, v in by_place.items() if isinstance(k, str)}
    count = {}
    for place in sorted(k for k in by_place if isinstance(k, tuple)):
        index = count[place[0]] = count.get(place[0], -1) + 1
        layers.update({(place[0], index, field): w for field, w in by_place[place].items()})
    return layers
