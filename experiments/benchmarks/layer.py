"""Suite `layer`: forward+backward time of one MoE layer against a dense FFN of the same
per-token FLOPs (hidden width k·F), on this machine's default backend. The backward pass
computes the gradients of every parameter and of the input (as in any layer but the first),
so the dispatch's backward is counted.

Three sections, each a ratio measured side by side in one run:
- routing: the experts alone on the capacity buffer (no routing: the floor of capacity-based
  dispatch, which computes every slot, empty or not), top-1, top-2 (index and einsum
  dispatch), expert choice (capacity factor 2, so two experts per token on average),
  DeepSeek-V3 (sigmoid affinities, dropless), dropless top-1/2 (moejax.grouped's CPU path and
  jax.lax.ragged_dot), for E = 8 and 64.
- experts: fine-grained experts at equal active and total FLOPs (DeepSeekMoE's segmentation):
  E = 8·m experts of width F/m, k·m of them per token, against the E = 8 layer.
- tokens: the top-1 layer at 2k, 8k and 32k tokens against 8k (linear would be 0.25 and 4).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.benchmarks.table import Table
from experiments.benchmarks.timing import side_by_side
from moejax import MoeConfig, MoeLayer
from moejax.experts import expert_ffn


@dataclasses.dataclass(frozen=True)
class Sizes:
    tokens: int = 8192
    group_size: int = 1024
    d_model: int = 512
    hidden: int = 1024
    experts: tuple = (8, 64)
    fine_grained: tuple = (8, 64, 256)
    token_sweep: tuple = (2048, 8192, 32768)
    repeats: int = 5


FULL = Sizes()
SMOKE = Sizes(tokens=64, group_size=32, d_model=16, hidden=16, experts=(4,),
              fine_grained=(4, 8), token_sweep=(32, 64, 128), repeats=1)

# (name, router, k, dispatch, grouped matmul, capacity factor); dense width = k·F
# (expert choice: capacity factor · F, the average experts per token). Dispatch "experts":
# the experts alone on the capacity buffer, no routing (the floor of capacity-based dispatch).
ROUTING = [
    ("experts alone, top-1 buffer", "top_k", 1, "experts", "auto", 1.25),
    ("top-1 index", "top_k", 1, "index", "auto", 1.25),
    ("top-1 einsum", "top_k", 1, "einsum", "auto", 1.25),
    ("top-1 dropless", "top_k", 1, "dropless", "blocks", 1.25),
    ("top-1 dropless ragged_dot", "top_k", 1, "dropless", "ragged_dot", 1.25),
    ("experts alone, top-2 buffer", "top_k", 2, "experts", "auto", 1.25),
    ("top-2 index", "top_k", 2, "index", "auto", 1.25),
    ("top-2 einsum", "top_k", 2, "einsum", "auto", 1.25),
    ("top-2 dropless", "top_k", 2, "dropless", "blocks", 1.25),
    ("expert choice cf=2", "expert_choice", 2, "index", "auto", 2.0),
    ("DeepSeek-V3 top-2 dropless", "deepseek_v3", 2, "dropless", "blocks", 1.25),
]


def inputs(tokens: int, sizes: Sizes) -> jax.Array:
    """[G, S, D] standard normal tokens."""
    return jax.random.normal(jax.random.key(0), (tokens // sizes.group_size, sizes.group_size,
                                                 sizes.d_model))


def dense_step(x: jax.Array, width: int) -> Callable[[], jax.Array]:
    """fwd+bwd (weights and input) of a ReLU FFN D -> width -> D on every token."""
    d = x.shape[-1]
    k1, k2 = jax.random.split(jax.random.key(1))
    w = {"wi": jax.random.normal(k1, (d, width)) * d ** -0.5,
         "wo": jax.random.normal(k2, (width, d)) * width ** -0.5}
    grad = jax.jit(jax.grad(lambda w, x: jnp.sum(expert_ffn(w, x, "relu", jnp.float32) ** 2),
                            argnums=(0, 1)))
    rows = x.reshape(-1, d)
    return lambda: grad(w, rows)


def moe_step(x: jax.Array, cfg: MoeConfig) -> Callable[[], object]:
    """fwd+bwd of a MoeLayer (gradients of every parameter and of the input)."""
    layer = MoeLayer(cfg, x.shape[-1], rngs=nnx.Rngs(0))

    @nnx.jit
    def grad(layer, x):
        def loss(layer, x):
            y, stats = layer(x)
            return jnp.sum(y ** 2) + stats["aux_loss"]
        return nnx.grad(loss, argnums=(0, 1))(layer, x)

    step = nnx.cached_partial(grad, layer)       # no graph traversal per timed call
    return lambda: step(x)


def experts_alone_step(x: jax.Array, cfg: MoeConfig) -> Callable[[], object]:
    """fwd+bwd (weights and input) of the E experts alone on a full capacity buffer
    [E, G·C, D]: the floor that capacity-based dispatch cannot go below (its padding to C
    slots included)."""
    g, s, d = x.shape
    layer = MoeLayer(cfg, d, rngs=nnx.Rngs(0))
    rows = g * layer.capacity(s, train=True)
    buffer = jax.random.normal(jax.random.key(2), (cfg.num_experts, rows, d))   # [E, G·C, D]
    w = layer.experts.weights()
    grad = jax.jit(jax.grad(lambda w, x: jnp.sum(expert_ffn(w, x, cfg.activation,
                                                            jnp.float32) ** 2), argnums=(0, 1)))
    return lambda: grad(w, buffer)


def moe_config(sizes: Sizes, router: str, k: int, experts: int, hidden: int, dispatch: str,
               grouped: str, capacity_factor: float) -> MoeConfig:
    return MoeConfig(num_experts=experts, num_selected_experts=k, router=router,
                     hidden_dim=hidden, dispatch=dispatch, grouped_matmul=grouped,
                     capacity_factor=capacity_factor, group_size=sizes.group_size,
                     renormalize_gates=router == "deepseek_v3")


def routing_section(table: Table, sizes: Sizes) -> None:
    x = inputs(sizes.tokens, sizes)
    for experts in sizes.experts:
        for name, router, k, dispatch, grouped, cf in ROUTING:
            if grouped == "ragged_dot" and experts != sizes.experts[0]:
                continue                    # every expert on every token on XLA:CPU: once is enough
            alone = dispatch == "experts"
            cfg = moe_config(sizes, router, k, experts, sizes.hidden,
                             "index" if alone else dispatch, grouped, cf)
            moe = experts_alone_step(x, cfg) if alone else moe_step(x, cfg)
            width = cfg.active_hidden_dim
            t = side_by_side({"dense": dense_step(x, width), "moe": moe}, sizes.repeats)
            table.add(section="routing", variant=name, E=experts, k=k, tokens=sizes.tokens,
                      baseline=f"dense {width}", ms=t["moe"] * 1e3,
                      baseline_ms=t["dense"] * 1e3, ratio=t["moe"] / t["dense"])


def experts_section(table: Table, sizes: Sizes) -> None:
    x = inputs(sizes.tokens, sizes)
    base_e = sizes.fine_grained[0]
    for dispatch in ("index", "dropless"):
        steps: Dict[int, Callable] = {}
        for experts in sizes.fine_grained:
            m = experts // base_e
            cfg = moe_config(sizes, "top_k", m, experts, sizes.hidden // m, dispatch, "blocks",
                             1.25)
            steps[experts] = moe_step(x, cfg)
        t = side_by_side(steps, sizes.repeats)
        for experts in sizes.fine_grained:
            m = experts // base_e
            table.add(section="experts", variant=f"fine-grained top-{m}, F/{m}, {dispatch}",
                      E=experts, k=m, tokens=sizes.tokens, baseline=f"E={base_e} {dispatch}",
                      ms=t[experts] * 1e3, baseline_ms=t[base_e] * 1e3,
                      ratio=t[experts] / t[base_e])


def tokens_section(table: Table, sizes: Sizes) -> None:
    experts = sizes.experts[0]
    cfg = moe_config(sizes, "top_k", 1, experts, sizes.hidden, "index", "auto", 1.25)
    moe, dense = {}, {}
    for tokens in sizes.token_sweep:
        x = inputs(tokens, sizes)
        moe[tokens], dense[tokens] = moe_step(x, cfg), dense_step(x, sizes.hidden)
    t = side_by_side({**{("moe", n): f for n, f in moe.items()},
                      **{("dense", n): f for n, f in dense.items()}}, sizes.repeats)
    ref = sizes.tokens
    for tokens in sizes.token_sweep:
        for kind in ("moe", "dense"):
            name = "top-1 index" if kind == "moe" else f"dense {sizes.hidden}"
            table.add(section="tokens", variant=name, E=experts if kind == "moe" else None, k=1,
                      tokens=tokens, baseline=f"same at T={ref}", ms=t[(kind, tokens)] * 1e3,
                      baseline_ms=t[(kind, ref)] * 1e3,
                      ratio=t[(kind, tokens)] / t[(kind, ref)])


def run(smoke: bool = False) -> Table:
    sizes = SMOKE if smoke else FULL
    table = Table(
        title=(f"layer fwd+bwd on {jax.default_backend()}: T={sizes.tokens} tokens in groups of "
               f"{sizes.group_size}, D={sizes.d_model}, F={sizes.hidden}, capacity factor 1.25 "
               f"(expert choice: 2), float32, gradients of weights and input, median of "
               f"{sizes.repeats} (alternating with the baseline)"),
        columns=[("section", "section", ""), ("variant", "variant", ""), ("E", "E", "d"),
                 ("k", "k", "d"), ("tokens", "tokens", "d"), ("ms", "ms", ".1f"),
                 ("baseline", "baseline", ""), ("baseline_ms", "baseline ms", ".1f"),
                 ("ratio", "ratio", ".2f")])
    routing_section(table, sizes)
    experts_section(table, sizes)
    tokens_section(table, sizes)
    return table
