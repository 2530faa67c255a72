"""A stack of layers run under nnx.scan, with every MoE layer's stats collected per layer.

The FFN pattern (e.g. dense, moe, dense, moe) is cut into a repeating super-block (dense, moe)
whose parameters are stacked along a leading axis and scanned over; a pattern that does not
repeat (top/bottom layouts, explicit lists) is cut into runs of one kind, each scanned. The
stats of the MoE layers come out stacked in layer order: stats[key] has shape [num_moe, ...].
With scan_layers=False the same stacked parameters run in a Python loop (one copy of the layer
per depth in the compiled program), so checkpoints do not depend on the choice.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.models.block import LayerInputs


def segments(pattern: Sequence[str]) -> List[Tuple[Tuple[str, ...], int]]:
    """Cuts a layer pattern into (super-block kinds, repeats) pieces, in order."""
    n = len(pattern)
    for period in range(1, n + 1):
        if n % period == 0 and all(pattern[i] == pattern[i % period] for i in range(n)):
            if period < n or n == 1:
                return [(tuple(pattern[:period]), n // period)]
            break
    runs: List[Tuple[Tuple[str, ...], int]] = []
    for kind in pattern:
        if runs and runs[-1][0] == (kind,):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append(((kind,), 1))
    return runs


def layer_keys(rngs: nnx.Rngs, num_layers: int) -> Dict[str, jax.Array]:
    """[num_layers] keys for each RNG stream: one draw per stream folded with the layer index.

    Layer i's weights then depend on the seed and i only, not on how the other layers are laid
    out: a dense model and an MoE model with the same seed start with the same attention
    weights in every layer and the same FFN in every dense layer (common random numbers for
    comparisons of FFN variants).
    """
    keys = {}
    for name, _ in rngs.items():
        base = rngs[name]()
        keys[name] = jnp.stack([jax.random.fold_in(base, i) for i in range(num_layers)])
    return keys


class SuperBlock(nnx.Module):
    """A few consecutive layers (one period of the pattern); keys: [len(kinds)] per stream."""

    def __init__(self, kinds: Tuple[str, ...], make_block: Callable,
                 keys: Dict[str, jax.Array]):
        self.layers = nnx.List([
            make_block(kind, nnx.Rngs(**{name: k[j] for name, k in keys.items()}))
            for j, kind in enumerate(kinds)])

    def __call__(self, x, inputs: LayerInputs, deterministic: bool):
        stats = []
        for layer in self.layers:
            x, s = layer(x, inputs, deterministic)
            if layer.is_moe:
                stats.append(s)
        return x, stats


# jax.checkpoint policy per ModelConfig.remat ("none": no checkpoint at all)
REMAT_POLICIES = {"full": None,
                  "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class Segment(nnx.Module):
    """`repeats` copies of one SuperBlock with stacked parameters."""

    def __init__(self, kinds, repeats: int, make_block: Callable, scan: bool,
                 keys: Dict[str, jax.Array], remat: str = "none"):
        """keys: [repeats, len(kinds)] per RNG stream (layer_keys of the segment's layers);
        remat: ModelConfig.remat, applied to each repeat of the super-block."""
        self.repeats = repeats
        self.scan = scan
        self.remat = remat

        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(keys):
            return SuperBlock(kinds, make_block, keys)

        self.blocks = create(keys)

    def __call__(self, x, inputs: LayerInputs, deterministic: bool):
        def run(block, x, inputs):
            return block(x, inputs, deterministic)
        if self.remat != "none":
            run = nnx.remat(run, policy=REMAT_POLICIES[self.remat])
        if self.scan:
            @nnx.scan(in_axes=(nnx.Carry, 0, None), out_axes=(nnx.Carry, 0))
            def body(x, block, inputs):
                return run(block, x, inputs)
            x, stats = body(x, self.blocks, inputs)
        else:
            graphdef, state = nnx.split(self.blocks)
            outs, states = [], []
            for i in range(self.repeats):
                block = nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))
                x, s = run(block, x, inputs)
                outs.append(s)
                states.append(nnx.state(block))
            nnx.update(self.blocks, jax.tree.map(lambda *a: jnp.stack(a), *states))
            stats = jax.tree.map(lambda *a: jnp.stack(a), *outs)
        return x, layer_order(stats)


def layer_order(stats: List[Dict[str, jax.Array]]) -> Dict[str, jax.Array]:
    """Per-MoE-layer-of-the-super-block dicts of [repeats, ...] -> one dict [repeats·m, ...].

    Layer r·m + j of the segment is MoE layer j of repeat r.
    """
    if not stats:
        return {}
    return {k: jnp.stack([s[k] for s in stats], axis=1).reshape(-1, *stats[0][k].shape[1:])
            for k in stats[0]}


class LayerStack(nnx.Module):
    """All layers of an encoder or decoder, with MoE stats stacked in layer order."""

    def __init__(self, pattern: Sequence[str], make_block: Callable, *, scan: bool,
                 rngs: nnx.Rngs, remat: str = "none"):
        self.pattern = tuple(pattern)
        keys = layer_keys(rngs, len(self.pattern))
        pieces, start = [], 0
        for kinds, reps in segments(pattern):
            n = len(kinds) * reps
            piece = {name: k[start:start + n].reshape(reps, len(kinds), *k.shape[1:])
                     for name, k in keys.items()}
            pieces.append(Segment(kinds, reps, make_block, scan, piece, remat))
            start += n
        self.segments = nnx.List(pieces)

    def __call__(self, x, inputs: LayerInputs, deterministic: bool
                 ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        collected = []
        for segment in self.segments:
            x, stats = segment(x, inputs, deterministic)
            if stats:
                collected.append(stats)
        if not collected:
            return x, {}
        return x, {k: jnp.concatenate([s[k] for s in collected]) for k in collected[0]}
