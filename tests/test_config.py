"""MoeConfig validation: bad configs and bad inputs raise one ConfigError line naming the field,
before anything is compiled; every router family builds and runs from a valid config."""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import moejax
from moejax import ConfigError, MoeConfig, MoeLayer, SoftMoeLayer, make_moe_layer

D = 8
TINY = dict(num_experts=4, hidden_dim=16)


@nnx.jit(static_argnames="deterministic")
def jit_forward(layer, x, deterministic=False):
    """One compiled forward pass (op-by-op eager execution is several times slower on CPU)."""
    return layer(x, deterministic=deterministic)


def assert_one_line_error(excinfo, *fragments):
    """The error is a ConfigError (a ValueError), one line, and names every fragment."""
    err = excinfo.value
    assert isinstance(err, ConfigError)
    assert isinstance(err, ValueError)
    msg = str(err)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    assert moejax.ConfigError is ConfigError


# ---------------------------------------------------------------------------------------------
# Bad configs: one line, naming the field.
# ---------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    pytest.param(dict(num_experts=2, num_selected_experts=3), "moe.num_selected_experts",
                 id="k_gt_E"),
    pytest.param(dict(num_experts=8, num_selected_experts=9), "moe.num_selected_experts",
                 id="k_gt_E_8"),
    pytest.param(dict(capacity_factor=0.0), "moe.capacity_factor", id="cf_zero"),
    pytest.param(dict(capacity_factor=-1.25), "moe.capacity_factor", id="cf_negative"),
    pytest.param(dict(capacity_factor=float("nan")), "moe.capacity_factor", id="cf_nan"),
    pytest.param(dict(eval_capacity_factor=0.0), "moe.eval_capacity_factor", id="eval_cf_zero"),
    pytest.param(dict(eval_capacity_factor=-2.0), "moe.eval_capacity_factor",
                 id="eval_cf_negative"),
    pytest.param(dict(router="switch"), "moe.router", id="unknown_router"),
    pytest.param(dict(router="TOP_K"), "moe.router", id="router_wrong_case"),
    pytest.param(dict(activation="tanh"), "moe.activation", id="unknown_activation"),
    pytest.param(dict(dispatch="scatter"), "moe.dispatch", id="unknown_dispatch"),
    pytest.param(dict(router="expert_choice", causal=True), "moe.router",
                 id="expert_choice_causal"),
    pytest.param(dict(router="gshard", num_selected_experts=1), "moe.num_selected_experts",
                 id="gshard_k1"),
    pytest.param(dict(router="gshard", num_experts=4, num_selected_experts=3),
                 "moe.num_selected_experts", id="gshard_k3"),
    pytest.param(dict(router="expert_choice", dispatch="dropless"), "moe.dispatch",
                 id="dropless_expert_choice"),
    pytest.param(dict(router="soft_moe", dispatch="dropless"), "moe.dispatch",
                 id="dropless_soft_moe"),
    pytest.param(dict(router="deepseek_v3", num_experts=6, num_expert_groups=4),
                 "moe.num_expert_groups", id="experts_not_divisible_by_groups"),
    pytest.param(dict(router="top_k", num_experts=8, num_expert_groups=2),
                 "moe.num_expert_groups", id="expert_groups_need_deepseek"),
    pytest.param(dict(num_experts=0), "moe.num_experts", id="zero_experts"),
    pytest.param(dict(num_selected_experts=0), "moe.num_selected_experts", id="k_zero"),
    pytest.param(dict(group_size=0), "moe.group_size", id="group_size_zero"),
    pytest.param(dict(gate_order="top_k_only"), "moe.gate_order", id="unknown_gate_order"),
    pytest.param(dict(dtype="float64"), "moe.dtype", id="unknown_dtype"),
    pytest.param(dict(router_dtype="float16"), "moe.router_dtype", id="unknown_router_dtype"),
    pytest.param(dict(expert_dropout=1.0), "moe.expert_dropout", id="dropout_one"),
    pytest.param(dict(load_balance_loss=-0.01), "moe.load_balance_loss", id="negative_aux"),
]


@pytest.mark.parametrize("kwargs, field", BAD_CONFIGS)
def test_bad_config_raises_one_line_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig(**kwargs)
    assert_one_line_error(excinfo, field)


def test_k_greater_than_e_message_names_both_values():
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig(num_experts=2, num_selected_experts=3)
    assert_one_line_error(excinfo, "moe.num_selected_experts=3", "moe.num_experts=2")


def test_unknown_choice_message_names_value_and_allowed():
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig(router="switch")
    assert_one_line_error(excinfo, "moe.router='switch'", "'top_k'", "'expert_choice'")


def test_experts_not_divisible_message_names_both_fields():
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig(router="deepseek_v3", num_experts=6, num_expert_groups=4)
    assert_one_line_error(excinfo, "moe.num_experts=6", "moe.num_expert_groups=4")


def test_replace_validates_too():
    cfg = MoeConfig(**TINY)
    with pytest.raises(ConfigError) as excinfo:
        cfg.replace(num_selected_experts=5)
    assert_one_line_error(excinfo, "moe.num_selected_experts")


def test_expert_choice_causal_allowed_with_override():
    """Runs in test_every_router_builds_and_runs[expert_choice_cap2_causal_override-train]."""
    cfg = MoeConfig(router="expert_choice", causal=True, allow_non_causal_routing=True)
    assert cfg.causal and cfg.allow_non_causal_routing


def test_soft_moe_in_causal_decoder_is_refused_by_the_config():
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig(router="soft_moe", causal=True, **TINY)
    assert_one_line_error(excinfo, "moe.router='soft_moe'", "moe.allow_non_causal_routing")


def test_soft_moe_causal_with_override_builds():
    cfg = MoeConfig(router="soft_moe", causal=True, allow_non_causal_routing=True, **TINY)
    assert isinstance(make_moe_layer(cfg, D, rngs=nnx.Rngs(0)), SoftMoeLayer)


def test_moe_layer_rejects_soft_moe_router():
    with pytest.raises(ConfigError) as excinfo:
        MoeLayer(MoeConfig(router="soft_moe", **TINY), D, rngs=nnx.Rngs(0))
    assert_one_line_error(excinfo, "moe.router='soft_moe'")


# ---------------------------------------------------------------------------------------------
# from_dict / ml_collections.
# ---------------------------------------------------------------------------------------------

def test_from_dict_unknown_key_raises_one_line():
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig.from_dict({"num_experts": 4, "num_expert": 8})
    assert_one_line_error(excinfo, "moe.num_expert ")


def test_from_dict_unknown_key_uses_prefix():
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig.from_dict(ml_collections.ConfigDict({"capacity": 1.0}), prefix="model.moe")
    assert_one_line_error(excinfo, "model.moe.capacity")


def test_from_dict_invalid_value_raises_one_line():
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig.from_dict(ml_collections.ConfigDict({"num_experts": 2,
                                                       "num_selected_experts": 3}))
    assert_one_line_error(excinfo, "moe.num_selected_experts")


def test_from_dict_ml_collections_config_dict():
    values = {"num_experts": 4, "num_selected_experts": 2, "router": "top_k",
              "capacity_factor": 1.0, "group_size": None, "hidden_dim": 16,
              "activation": "swiglu", "router_z_loss": 1e-3}
    cfg = MoeConfig.from_dict(ml_collections.ConfigDict(values))
    assert cfg == MoeConfig(**values)
    cfg2 = MoeConfig.from_dict(ml_collections.FrozenConfigDict(values))
    assert cfg2 == cfg
    nested = ml_collections.ConfigDict({"moe": values})
    assert MoeConfig.from_dict(nested.moe) == cfg
    assert MoeConfig.from_dict({}) == MoeConfig()


# ---------------------------------------------------------------------------------------------
# Bad inputs to the layer: raised at trace time, before any compilation.
# ---------------------------------------------------------------------------------------------

def _layer(router="top_k", **kwargs):
    cfg = MoeConfig(router=router, **{**TINY, **kwargs})
    return make_moe_layer(cfg, D, rngs=nnx.Rngs(0))


BAD_INPUTS = [
    pytest.param(dict(group_size=5), (2, 6, D), ("moe.group_size=5", "12"),
                 id="group_size_not_dividing"),
    pytest.param(dict(group_size=7), (3, 4, D), ("moe.group_size=7",), id="group_size_7"),
    pytest.param(dict(), (2, 6, D + 1), ("(2, 6, 9)", str(D)), id="wrong_model_dim"),
    pytest.param(dict(), (12, D), ("(12, 8)",), id="rank_2_input"),
]


@pytest.mark.parametrize("router", ["top_k", "soft_moe"])
@pytest.mark.parametrize("kwargs, shape, fragments", BAD_INPUTS)
def test_bad_input_raises_eagerly(router, kwargs, shape, fragments):
    layer = _layer(router, **kwargs)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as excinfo:
        layer(jnp.ones(shape))
    assert time.perf_counter() - start < 5.0
    assert_one_line_error(excinfo, *fragments)


@pytest.mark.parametrize("kwargs, shape, fragments", BAD_INPUTS)
def test_bad_input_raises_at_trace_time_before_compile(kwargs, shape, fragments):
    """Under jax.jit the error comes from tracing (.trace / .lower), so nothing is compiled."""
    layer = _layer(**kwargs)
    graphdef, state = nnx.split(layer)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x, deterministic=True)[0]

    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    with pytest.raises(ConfigError) as excinfo:
        jax.jit(forward).trace(state, x)
    assert_one_line_error(excinfo, *fragments)
    with pytest.raises(ConfigError):
        jax.jit(forward).lower(state, x)


def test_bad_input_raises_under_nnx_jit():
    layer = _layer(group_size=5)
    with pytest.raises(ConfigError) as excinfo:
        nnx.jit(lambda m, x: m(x))(layer, jnp.ones((2, 6, D)))
    assert_one_line_error(excinfo, "moe.group_size=5")


# ---------------------------------------------------------------------------------------------
# Every router family builds and runs from a valid config.
# ---------------------------------------------------------------------------------------------

LOSS_FIELDS = ("load_balance_loss", "router_z_loss", "importance_loss", "load_loss",
               "sequence_balance_loss")

# One compiled forward pass per config (train or eval mode) keeps the file fast on CPU.
VALID = [
    pytest.param(dict(router="top_k"), False, id="switch_top1-train"),
    pytest.param(dict(router="top_k", num_selected_experts=2, dispatch="dropless",
                      gate_order="top_k_then_softmax", activation="swiglu", router_z_loss=1e-3),
                 False, id="top2_dropless-train"),
    pytest.param(dict(router="top_k", num_selected_experts=2, batch_prioritized=True,
                      renormalize_gates=True, jitter_eps=0.01, activation="geglu",
                      group_size=4, num_shared_experts=1), False,
                 id="top2_bpr_shared-train"),
    pytest.param(dict(router="gshard", num_selected_experts=2, dispatch="einsum",
                      router_z_loss=1e-3), True, id="gshard_einsum-eval"),
    pytest.param(dict(router="noisy_top_k", num_selected_experts=2, importance_loss=0.1,
                      load_loss=0.1), False, id="noisy_top_k-train"),
    pytest.param(dict(router="expert_choice", capacity_factor=2.0, router_z_loss=1e-3,
                      expert_choice_max_experts_per_token=2, causal=True,
                      allow_non_causal_routing=True), False,
                 id="expert_choice_cap2_causal_override-train"),
    pytest.param(dict(router="deepseek_v3", num_selected_experts=2, renormalize_gates=True,
                      num_expert_groups=2, num_selected_groups=1, bias_update_rate=1e-3,
                      sequence_balance_loss=1e-4, routed_scaling_factor=2.5), False,
                 id="deepseek_v3-train"),
    pytest.param(dict(router="dense"), True, id="dense-eval"),
    pytest.param(dict(router="soft_moe", slots_per_expert=2), False, id="soft_moe-train"),
]


@pytest.mark.parametrize("kwargs, deterministic", VALID)
def test_every_router_builds_and_runs(kwargs, deterministic):
    cfg = MoeConfig(**{**TINY, **kwargs})
    layer = make_moe_layer(cfg, D, rngs=nnx.Rngs(0))
    expected_cls = SoftMoeLayer if cfg.router == "soft_moe" else MoeLayer
    assert type(layer) is expected_cls
    x = jax.random.normal(jax.random.key(1), (2, 6, D))
    y, stats = jit_forward(layer, x, deterministic=deterministic)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert bool(jnp.all(jnp.isfinite(y)))
    assert stats["expert_counts"].shape == (cfg.num_experts,)
    for name in ("aux_loss", "max_violation", "router_entropy", "dropped_fraction"):
        assert np.isfinite(float(stats[name])), name
    # stats['aux_loss'] = Σ MoeConfig coefficient · the unweighted loss reported in stats.
    expected_aux = sum(getattr(cfg, n) * float(stats[n]) for n in LOSS_FIELDS if n in stats)
    np.testing.assert_allclose(float(stats["aux_loss"]), expected_aux, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("field,value", [
    ("capacity_factor", float("inf")), ("eval_capacity_factor", float("nan")),
    ("expert_dropout", "0.1"), ("jitter_eps", 1.0), ("routed_scaling_factor", 0.0),
    ("router_z_loss", float("inf")), ("num_experts", 4.0), ("min_capacity", True),
])
def test_non_finite_or_mistyped_numbers_raise_config_error(field, value):
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig(**{field: value})
    assert_one_line_error(excinfo, f"moe.{field}=")


def test_numpy_scalars_are_accepted():
    cfg = MoeConfig(capacity_factor=np.float32(1.25), num_experts=np.int64(4))
    assert cfg.capacity_factor == pytest.approx(1.25) and cfg.num_experts == 4


def test_batch_prioritized_routing_is_refused_in_a_causal_decoder():
    with pytest.raises(ConfigError) as excinfo:
        MoeConfig(batch_prioritized=True, causal=True)
    assert_one_line_error(excinfo, "moe.batch_prioritized=True", "moe.allow_non_causal_routing")
    MoeConfig(batch_prioritized=True, causal=True, allow_non_causal_routing=True)
