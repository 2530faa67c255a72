r"""Benchmarks printed as ratios measured side by side in one run.

    python -m experiments.bench --suite=layer [--tokens=8192 --d_model=512 --hidden=1024]
        [--experts=8 --json=PATH]

Suite `layer`: forward+backward time of the MoE layer (top-1 and top-2, capacity factor 1.25;
index and einsum dispatch; dropless with the block-sparse CPU path and with ragged_dot) against
a dense FFN with the same per-token FLOPs (hidden width k·F). Medians of --repeats runs.
"""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from moejax import MoeConfig, MoeLayer
from moejax.experts import expert_ffn

_SUITE = flags.DEFINE_enum("suite", "layer", ["layer"], "Which benchmark to run.")
_TOKENS = flags.DEFINE_integer("tokens", 8192, "Tokens per step (groups of --group_size).")
_GROUP = flags.DEFINE_integer("group_size", 1024, "Tokens per routing group.")
_D = flags.DEFINE_integer("d_model", 512, "Model width D.")
_F = flags.DEFINE_integer("hidden", 1024, "Expert hidden width F.")
_E = flags.DEFINE_integer("experts", 8, "Number of experts E.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per variant (median reported).")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")

VARIANTS = [("index", "auto"), ("einsum", "auto"), ("dropless", "blocks"),
            ("dropless", "ragged_dot")]


def median_seconds(fn, *args) -> float:
    jax.block_until_ready(fn(*args))                     # compile
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dense_time(x, k: int) -> float:
    keys = jax.random.split(jax.random.key(1), 2)
    w = {"wi": jax.random.normal(keys[0], (_D.value, k * _F.value)) * 0.02,
         "wo": jax.random.normal(keys[1], (k * _F.value, _D.value)) * 0.02}
    step = jax.jit(jax.grad(lambda w, x: jnp.sum(expert_ffn(w, x, "relu", jnp.float32) ** 2)))
    return median_seconds(step, w, x.reshape(-1, _D.value))


def moe_time(x, k: int, dispatch: str, grouped: str) -> float:
    cfg = MoeConfig(num_experts=_E.value, num_selected_experts=k, hidden_dim=_F.value,
                    dispatch=dispatch, grouped_matmul=grouped, capacity_factor=1.25,
                    group_size=_GROUP.value)
    layer = MoeLayer(cfg, _D.value, rngs=nnx.Rngs(0))
    step = nnx.jit(lambda layer, x: nnx.grad(lambda l: jnp.sum(l(x)[0] ** 2))(layer))
    return median_seconds(step, layer, x)


def layer_suite():
    x = jax.random.normal(jax.random.key(0), (_TOKENS.value // _GROUP.value, _GROUP.value,
                                              _D.value))
    rows = []
    for k in (1, 2):
        base = dense_time(x, k)
        rows.append(dict(k=k, variant="dense FFN (hidden k·F)", seconds=base, ratio=1.0))
        for dispatch, grouped in VARIANTS:
            seconds = moe_time(x, k, dispatch, grouped)
            name = dispatch if dispatch != "dropless" else f"dropless/{grouped}"
            rows.append(dict(k=k, variant=name, seconds=seconds, ratio=seconds / base))
    print(f"layer fwd+bwd, T={_TOKENS.value}, group={_GROUP.value}, D={_D.value}, "
          f"F={_F.value}, E={_E.value}, cf=1.25, {jax.default_backend()}, median of "
          f"{_REPEATS.value}")
    print(f"{'k':>2} {'variant':<24} {'ms':>9} {'x dense':>8}")
    for r in rows:
        print(f"{r['k']:>2} {r['variant']:<24} {r['seconds'] * 1e3:9.1f} {r['ratio']:8.2f}")
    return rows


def main(argv):
    del argv
    rows = layer_suite()
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
