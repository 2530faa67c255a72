"""Expert parallelism on 8 virtual CPU devices: the sharded layer equals the single-device layer.

The single-device layer is checked against per-token loops in test_layer.py; here the same
layer, with the same groups, runs under meshes data × expert (× model), where MoeLayer moves
expert inputs with shard_map + all_to_all. Outputs and gradients (parameters and input) must
agree to float32 precision, and the compiled program must hold exactly the collectives of the
capacity plan.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from experiments.benchmarks.collectives import collectives
from moejax import ConfigError, MoeConfig, MoeLayer
from moejax.parallel import MeshConfig, logical_to_spec, make_mesh, shard_model
from moejax.plan import expert_capacity

D, B, L = 16, 8, 32
MESHES = {"1x8": MeshConfig(data=1, expert=8), "2x4": MeshConfig(data=2, expert=4),
          "4x2": MeshConfig(data=4, expert=2), "2x2x2": MeshConfig(data=2, expert=2, model=2)}
ROUTERS = {
    "top1": MoeConfig(num_experts=8, hidden_dim=32, num_selected_experts=1, group_size=16),
    # E=4 < 8 devices on the 1x8 mesh: every expert replicated on two devices
    "top2": MoeConfig(num_experts=4, hidden_dim=32, num_selected_experts=2, group_size=16,
                      activation="swiglu"),
    "expert_choice": MoeConfig(router="expert_choice", num_experts=8, hidden_dim=32,
                               capacity_factor=2.0, group_size=16),
    "deepseek_v3": MoeConfig(router="deepseek_v3", num_experts=16, hidden_dim=16,
                             num_selected_experts=4, num_expert_groups=4, num_selected_groups=2,
                             num_shared_experts=1, dispatch="dropless",
                             bias_update_rate=1e-3, sequence_balance_loss=1e-4),
    "dropless": MoeConfig(num_experts=8, hidden_dim=32, num_selected_experts=2,
                          dispatch="dropless", block_size=8),
    "dropless_replicated": MoeConfig(num_experts=2, hidden_dim=32, num_selected_experts=1,
                                     dispatch="dropless", block_size=8),
    "gshard_einsum": MoeConfig(router="gshard", num_experts=8, hidden_dim=32,
                               num_selected_experts=2, dispatch="einsum", group_size=16),
}


def make_layer(cfg):
    return MoeLayer(cfg, D, rngs=nnx.Rngs(params=0, routing=1, dropout=2))


def loss_fn(layer, x):
    y, stats = layer(x)
    return jnp.sum(y * jnp.cos(y)) + stats["aux_loss"], y


@nnx.jit
def value_and_grads(layer, x):
    (loss, y), grads = nnx.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(layer, x)
    return loss, y, grads


def inputs():
    return jax.random.normal(jax.random.key(3), (B, L, D), jnp.float32)


@pytest.fixture(scope="module")
def single_device():
    """Single-device results per router (computed once)."""
    cache = {}

    def get(name):
        if name not in cache:
            loss, y, (g_layer, g_x) = value_and_grads(make_layer(ROUTERS[name]), inputs())
            cache[name] = (loss, y, jax.tree.leaves(nnx.to_pure_dict(g_layer)), g_x)
        return cache[name]
    return get


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


def loss_error(loss, loss0, y0):
    """|loss − loss0| against the scale of its float32 rounding, Σ|y·cos y| over the B·L·D
    terms (aux_loss is ~0.01 and adds nothing to it). The loss sums terms of both signs: for
    expert choice 440 in magnitude against a sum of 0.46. So reordering the sum (sharded
    partial sums) moves it by a small multiple of ε·Σ|t|, which relative to |Σ t| itself
    reached 1.08e-5 with jax 0.12 (1.1e-8 of Σ|t|)."""
    y = np.asarray(y0, np.float64)
    scale = np.sum(np.abs(y * np.cos(y)))
    return abs(float(loss) - float(loss0)) / scale


# every mesh for the routers the issue names; one mesh each for the extra variants
CASES = ([(r, m) for r in ("top1", "top2", "expert_choice", "deepseek_v3", "dropless")
          for m in MESHES]
         + [("dropless_replicated", "1x8"), ("gshard_einsum", "2x2x2")])


@pytest.mark.parametrize("router, mesh_name", CASES)
def test_sharded_layer_equals_single_device(router, mesh_name, single_device):
    loss0, y0, g0, gx0 = single_device(router)
    mesh = make_mesh(MESHES[mesh_name])
    with jax.set_mesh(mesh):
        layer = shard_model(lambda: make_layer(ROUTERS[router]), mesh)
        wi = layer.experts.wi[...]
        assert wi.sharding.spec == logical_to_spec(("expert", "embed", "mlp"), wi.shape, mesh)
        loss1, y1, (g_layer, gx1) = value_and_grads(layer, inputs())
    assert relative_error(y1, y0) <= 1e-5
    assert loss_error(loss1, loss0, y0) <= 1e-5
    assert relative_error(gx1, gx0) <= 1e-5
    g1 = jax.tree.leaves(nnx.to_pure_dict(g_layer))
    assert len(g1) == len(g0)
    for a, b in zip(g1, g0):
        assert relative_error(a, b) <= 1e-5


@pytest.mark.parametrize("mesh_name", ["2x4", "2x2x2"])
def test_compiled_collectives_are_the_plans_all_to_alls(mesh_name):
    """Forward+backward: two all_to_alls out to the experts and back (four in all), each
    moving exactly a device's share of the plan's expert buffers [G_l, E, C, D], and no
    all-gather of any parameter."""
    cfg = ROUTERS["top1"]
    mesh = make_mesh(MESHES[mesh_name])
    with jax.set_mesh(mesh):
        layer = shard_model(lambda: make_layer(cfg), mesh)
        hlo = value_and_grads.lower(layer, inputs()).compile().as_text()
    found = collectives(hlo)
    a2a = [nbytes for op, nbytes in found if op == "all-to-all"]
    g_local = (B * L // cfg.group_size) // (mesh.shape["data"] * mesh.shape["expert"])
    capacity = expert_capacity(cfg.group_size, cfg.num_experts, 1, cfg.capacity_factor,
                               cfg.min_capacity)
    assert a2a == [g_local * cfg.num_experts * capacity * D * 4] * 4
    assert [op for op, _ in found if op == "all-gather"] == []


def test_logical_axis_rules_place_parameters():
    mesh = make_mesh(MeshConfig(data=2, expert=2, model=2))
    assert logical_to_spec(("expert", "embed", "mlp"), (4, 16, 32), mesh) == P(
        "expert", None, "model")
    # scanned layers add a leading axis; it stays whole
    assert logical_to_spec(("expert", "mlp", "embed"), (3, 4, 32, 16), mesh) == P(
        None, "expert", "model", None)
    # a dimension the mesh axis does not divide stays whole (vocabulary of 359)
    assert logical_to_spec(("vocab", "embed"), (359, 16), mesh) == P(None, None)
    fsdp = make_mesh(MeshConfig(data=2, fsdp=4))
    assert logical_to_spec(("embed", "mlp"), (16, 32), fsdp) == P("fsdp", None)
    assert logical_to_spec(("embed", "expert_scores"), (16, 8), mesh) == P(None, None)


@pytest.mark.parametrize("mesh, message", [
    (MeshConfig(data=3, expert=2), r"mesh data=3 × fsdp=1 × expert=2 × model=1 has 6 devices "
                                   r"but 8 are available"),
    (MeshConfig(data=-1, expert=3), r"cannot fill 8 devices: 8 is not a multiple of 3"),
    (MeshConfig(data=-1, model=-1), r"only one mesh axis may be -1"),
    (MeshConfig(expert=0), r"mesh.expert=0 must be a positive integer or -1"),
    (MeshConfig(num_devices=16), r"mesh.num_devices=16 but only 8 devices"),
])
def test_invalid_meshes_fail_with_one_line(mesh, message):
    with pytest.raises(ConfigError, match=message) as err:
        make_mesh(mesh)
    assert "\n" not in str(err.value)


def test_unknown_mesh_field_is_named():
    with pytest.raises(ConfigError, match=r"mesh.experts is not a mesh field"):
        MeshConfig.from_dict({"experts": 4})


def test_experts_must_fit_the_expert_and_model_axes():
    from moejax.parallel import check_moe_fits
    mesh = make_mesh(MeshConfig(data=2, expert=4))
    with pytest.raises(ConfigError, match=r"moe.num_experts=6 does not fit mesh.expert=4"):
        check_moe_fits(MoeConfig(num_experts=6, hidden_dim=32), mesh)
    check_moe_fits(MoeConfig(num_experts=2, hidden_dim=32), mesh)     # replicated twice
    check_moe_fits(MoeConfig(num_experts=8, hidden_dim=32), mesh)     # two per device
    model_mesh = make_mesh(MeshConfig(data=4, model=2))
    with pytest.raises(ConfigError, match=r"moe.hidden_dim=33 is not divisible by mesh.model=2"):
        check_moe_fits(MoeConfig(num_experts=8, hidden_dim=33), model_mesh)


def test_groups_that_do_not_split_over_the_batch_shards_fail_while_tracing(monkeypatch):
    """Errors come from tracing, before XLA compiles anything."""
    compiled = []
    monkeypatch.setattr(jax.stages.Lowered, "compile",
                        lambda self, *a, **k: compiled.append(1))
    mesh = make_mesh(MeshConfig(data=2, expert=4))
    cfg = ROUTERS["top1"].replace(group_size=64)               # 256 tokens -> 4 groups
    with jax.set_mesh(mesh):
        layer = shard_model(lambda: make_layer(cfg), mesh)
        with pytest.raises(ConfigError, match=r"4 groups, not divisible by the 8 batch shards"):
            value_and_grads(layer, inputs())
    assert not compiled


def ragged_all_to_all_reference(operand, output, input_offsets, send_sizes, output_offsets,
                                recv_sizes, *, axis_name, axis_index_groups=None):
    """jax.lax.ragged_all_to_all as its docstring defines it, from all_gather and scatter
    (XLA:CPU has no ragged_all_to_all): source i writes operand_i[input_offsets_i[me] :
    + send_sizes_i[me]] at output[output_offsets_i[me]:] of device me."""
    del axis_index_groups
    me = jax.lax.axis_index(axis_name)
    every = [jax.lax.all_gather(a, axis_name)
             for a in (operand, input_offsets, send_sizes, output_offsets)]
    rows = jnp.arange(operand.shape[0])
    for i in range(every[0].shape[0]):
        src, start, size, dst = (a[i] for a in every)
        # at most recv_sizes[i] rows from source i: a wrong recv_sizes loses rows
        mine = ((rows >= start[me]) & (rows < start[me] + size[me])
                & (rows - start[me] < recv_sizes[i]))
        target = jnp.where(mine, dst[me] + rows - start[me], output.shape[0])
        output = output.at[target].set(src, mode="drop")
    return output


@pytest.mark.parametrize("router, mesh_name, matmul", [
    ("dropless", "2x2x2", "blocks"), ("deepseek_v3", "2x2x2", "auto"),
    ("dropless_replicated", "1x8", "blocks"), ("dropless", "2x2x2", "megablox")])
def test_ragged_exchange_equals_single_device(router, mesh_name, matmul, single_device,
                                              monkeypatch):
    """The TPU/GPU dropless exchange (ragged_all_to_all, exact sizes), run here through a
    reference of the collective's documented semantics, equals the single-device layer (the
    CPU's blocks matmul). With the megablox kernel (interpreted here) too: it runs without
    shard_map's variance check, so the gradients of weights not split over `data` are summed
    over it by shard_map's transpose, and must still equal one device's."""
    monkeypatch.setattr(jax.lax, "ragged_all_to_all", ragged_all_to_all_reference)
    loss0, y0, g0, gx0 = single_device(router)
    cfg = ROUTERS[router].replace(dropless_all_to_all="ragged", grouped_matmul=matmul)
    mesh = make_mesh(MESHES[mesh_name])
    with jax.set_mesh(mesh):
        layer = shard_model(lambda: make_layer(cfg), mesh)
        loss1, y1, (g_layer, gx1) = value_and_grads(layer, inputs())
    assert relative_error(y1, y0) <= 1e-5
    assert relative_error(gx1, gx0) <= 1e-5
    for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(g_layer)), g0):
        assert relative_error(a, b) <= 1e-5


def test_a_batch_shard_must_live_on_one_process():
    """Each process feeds its own rows: a `model` group spanning two hosts is refused."""
    from types import SimpleNamespace

    from moejax.train.mesh import _check_batch_shards_per_process

    def fake_mesh(model):
        devices = np.array([SimpleNamespace(process_index=i // 4) for i in range(8)],
                           dtype=object).reshape(8 // model, 1, 1, model)
        return SimpleNamespace(devices=devices, shape={"model": model})
    _check_batch_shards_per_process(fake_mesh(4))                 # 4 devices per process
    with pytest.raises(ConfigError, match=r"mesh.model=8 spans several processes"):
        _check_batch_shards_per_process(fake_mesh(8))


def test_checkpoint_directory_keeps_urls():
    from moejax.checkpoints.store import checkpoint_directory
    assert checkpoint_directory("gs://bucket/run/") == "gs://bucket/run/checkpoints"
    assert checkpoint_directory("run").endswith("/run/checkpoints")
    assert checkpoint_directory("run").startswith("/")
