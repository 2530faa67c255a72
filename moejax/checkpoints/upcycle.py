"""Sparse Upcycling (Komatsuzaki et al. 2022): a dense checkpoint's weights as an MoE model's.

Every MoE layer's experts start as copies of that layer's dense FFN (wi, wi_gate, wo broadcast
over the expert axis); the router and everything else under the MoE layer's `ffn/` (noise
weights, selection bias, Soft MoE slot parameters, the layer's RNG streams) keep their fresh
initialisation, as in the paper. Attention, norms, embeddings, relative position biases, the
head and the dropout RNG streams are copied unchanged. When the gates of every token sum to one
and no token is dropped, the upcycled model computes exactly the dense model's function.

Optimizer state: mode "carry" copies the dense slots the same way (the paper copies the
parameters "and optionally their optimizer state"): an expert's moments are the dense FFN's,
the router's stay fresh; mode "reset" starts every slot fresh. A slot is every part of the
optimizer state that belongs to one parameter (AdamW mu/nu mirror the parameters; Adafactor's
per-matrix statistics, with their own step count, are a list over the parameter leaves).
Everything else (the optimizer step, the schedule's count, AdamW's shared count) is shared by
all parameters and always carried, so the learning-rate schedule continues where the dense run
stopped.

These are pure functions on pure nested dicts (moejax.checkpoints.store.to_saveable,
nnx.to_pure_dict). They also run under jax.eval_shape, which checks every shape without
touching the weights. Parameters of a stack live at <stack>/segments/<s>/blocks/layers/<j>/...
with a leading axis of `repeats` (moejax/models/stack.py): layer start(s) + r·len(kinds) + j.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.errors import ConfigError, check, check_choice
from moejax.models.config import ModelConfig, ffn_pattern
from moejax.models.stack import segments

OPTIMIZER_STATE_MODES = ("carry", "reset")
# the module attribute that holds each stack's layers
STACK_ATTRIBUTES = {"decoder": {"decoder": "layers"},
                    "encoder_decoder": {"encoder": "encoder", "decoder": "decoder"}}
# model fields that change the function a layer computes without changing any shape
SAME_FUNCTION_FIELDS = ("activation", "resolved_position", "rope_max_wavelength",
                        "relative_num_buckets", "relative_max_distance", "tie_embeddings")
_DEPTH_FIELDS = {("decoder", "decoder"): "model.num_layers",
                 ("encoder_decoder", "encoder"): "model.num_encoder_layers",
                 ("encoder_decoder", "decoder"): "model.num_decoder_layers"}
LAYER_PATH = re.compile(r"^(?P<prefix>[^/]+/segments/\d+/blocks/layers/\d+)/(?P<rest>.+)$")

Tree = dict[Any, Any]


# ----------------------------------------------------------------------------- configs

def check_compatible(dense: ModelConfig, moe: ModelConfig) -> None:
    """One ConfigError line unless `moe` is `dense` with some FFNs made sparse."""
    check(not dense.has_moe,
          f"upcycle: the checkpoint to upcycle is not dense (model.moe_layout="
          f"{dense.moe_layout!r}); upcycle a model with moe_layout='none'")
    check(moe.has_moe,
          f"upcycle: the MoE config has no MoE layers (model.moe_layout={moe.moe_layout!r}, "
          f"moe_as_dense={moe.moe_as_dense}); choose a layout with sparse layers")
    check(dense.arch == moe.arch,
          f"upcycle: model.arch={moe.arch!r} differs from the dense model's {dense.arch!r}")
    for stack, depth in dense.stack_depths().items():
        want = moe.stack_depths()[stack]
        check(want == depth,
              f"upcycle: the dense model has {depth} {stack} layers but the MoE config has "
              f"{want} ({_DEPTH_FIELDS[(moe.arch, stack)]}={want}); use the dense depth")
    for name in SAME_FUNCTION_FIELDS:
        a, b = getattr(dense, name), getattr(moe, name)
        field = name.replace("resolved_", "")
        check(a == b, f"upcycle: model.{field}={b!r} differs from the dense model's {a!r}; "
                      "the upcycled model must compute the dense model's function")
    check(moe.moe.activation == dense.activation,
          f"upcycle: moe.activation={moe.moe.activation!r} differs from the dense FFN's "
          f"{dense.activation!r}; experts copied from the dense FFN must use its activation")
    check(not moe.moe.num_shared_experts,
          f"upcycle: moe.num_shared_experts={moe.moe.num_shared_experts} would add shared "
          "experts to the dense FFN's output; upcycle with num_shared_experts=0")
    check(not moe.extra_dense_ffn_after_moe,
          "upcycle: model.extra_dense_ffn_after_moe=True adds a dense FFN the dense model does "
          "not have; upcycle with extra_dense_ffn_after_moe=False")
    check(not moe.dense_moe_hybrid,
          "upcycle: model.dense_moe_hybrid=True adds a dense FFN the dense model does not "
          "have; upcycle with dense_moe_hybrid=False")


@dataclasses.dataclass(frozen=True)
class Place:
    """Where one layer's parameters live: the super-block path, the repeat index, its FFN."""
    prefix: str          # e.g. 'encoder/segments/1/blocks/layers/0'
    repeat: int
    kind: str            # 'dense' or 'moe'


def layer_places(cfg: ModelConfig) -> dict[tuple[str, int], Place]:
    """(stack, layer index) -> Place, from the layer pattern cut into scanned segments."""
    places = {}
    for stack, depth in cfg.stack_depths().items():
        attribute = STACK_ATTRIBUTES[cfg.arch][stack]
        start = 0
        for s, (kinds, repeats) in enumerate(segments(ffn_pattern(cfg, depth, stack))):
            for r in range(repeats):
                for j, kind in enumerate(kinds):
                    places[(stack, start + r * len(kinds) + j)] = Place(
                        f"{attribute}/segments/{s}/blocks/layers/{j}", r, kind)
            start += repeats * len(kinds)
    return places


# ----------------------------------------------------------------------------- plan

@dataclasses.dataclass(frozen=True)
class Source:
    """Where one (per-layer) piece of an MoE model leaf comes from.

    how: 'copy' (the dense leaf), 'experts' (the dense leaf broadcast over the expert axis) or
    'fresh' (the template's own value). repeat: the dense leaf's layer index along its leading
    axis (None: not a stacked leaf). label: the MoE leaf in words, for errors.
    """
    how: str
    path: str | None
    repeat: int | None
    label: str


def sources(path: str, moe_places: dict[str, list[tuple[str, int, str]]],
            dense_places: dict[tuple[str, int], Place]) -> Source | list[Source]:
    """The Source of a leaf of the MoE model (one per repeat for a stacked layer leaf)."""
    match = LAYER_PATH.match(path)
    if not match or match["prefix"] not in moe_places:
        return Source("copy", path, None, path)
    rest = match["rest"]
    out = []
    for stack, layer, kind in moe_places[match["prefix"]]:
        dense = dense_places[(stack, layer)]
        label = f"{stack} layer {layer} {rest}"
        if kind == "moe" and rest.startswith("ffn/"):
            inner = rest[len("ffn/"):]
            if inner.startswith("experts/"):
                out.append(Source("experts", f"{dense.prefix}/ffn/{inner[len('experts/'):]}",
                                  dense.repeat, label))
            else:                                     # router, noise, bias, RNG streams
                out.append(Source("fresh", None, None, label))
        else:
            out.append(Source("copy", f"{dense.prefix}/{rest}", dense.repeat, label))
    return out


def _moe_places(cfg: ModelConfig) -> dict[str, list[tuple[str, int, str]]]:
    """super-block path -> [(stack, layer, kind) for each repeat]."""
    table: dict[str, list[tuple[str, int, str]]] = {}
    for (stack, layer), place in sorted(layer_places(cfg).items(),
                                        key=lambda item: item[1].repeat):
        table.setdefault(place.prefix, []).append((stack, layer, place.kind))
    return table


def _shape(x) -> str:
    return str(tuple(int(d) for d in x.shape))


def _assemble(source: Source | list[Source], template, lookup: Callable[[str], Any],
              what: str = "") -> jax.Array:
    """The MoE leaf (shaped like `template`) built from the dense leaves `lookup` returns."""

    def dense_piece(s: Source, want: tuple[int, ...]):
        x = lookup(s.path)
        if x is None:
            raise ConfigError(f"upcycle: the dense checkpoint has no {what}{s.path}, which "
                              f"{what}{s.label} copies")
        if s.repeat is not None:
            x = x[s.repeat]
        if s.how == "experts":
            if tuple(x.shape) != tuple(want[1:]):
                raise ConfigError(f"upcycle: {what}{s.label} needs {tuple(want[1:])} per "
                                  f"expert but the dense checkpoint's {what}{s.path} is "
                                  f"{_shape(x)}")
            return jnp.broadcast_to(x[None], want)            # [E, ...]: E copies
        if tuple(x.shape) != tuple(want):
            raise ConfigError(f"upcycle: {what}{s.label} needs {tuple(want)} but the dense "
                              f"checkpoint's {what}{s.path} is {_shape(x)}")
        return x

    if isinstance(source, Source):
        return jnp.asarray(dense_piece(source, tuple(template.shape)), template.dtype)
    pieces = [template[r] if s.how == "fresh" else dense_piece(s, tuple(template.shape[1:]))
              for r, s in enumerate(source)]                   # one per repeat
    return jnp.stack([jnp.asarray(p, template.dtype) for p in pieces])


# ----------------------------------------------------------------------------- trees

def _key(k) -> str:
    return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))


def flatten(tree: Tree) -> dict[str, Any]:
    """{'a/b/0/c': leaf} in the tree's own leaf order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key(k) for k in path): leaf for path, leaf in leaves}


def _rebuild(template: Tree, values: dict[str, Any]) -> Tree:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(
        treedef, [values["/".join(_key(k) for k in path)] for path, _ in leaves])


def upcycle_model(dense: Tree, template: Tree, dense_cfg: ModelConfig,
                  moe_cfg: ModelConfig) -> Tree:
    """The MoE model's pure dict: `template` (a fresh MoE model) with the dense weights in.

    dense, template: to_saveable(nnx.state(model)) of the dense and the MoE model.
    Every dense leaf must find a place; every mismatch raises one ConfigError line.
    """
    check_compatible(dense_cfg, moe_cfg)
    dense_flat = flatten(dense)
    moe_places, dense_places = _moe_places(moe_cfg), layer_places(dense_cfg)
    used = set()

    def lookup(path):
        used.add(path)
        return dense_flat.get(path)

    values = {path: _assemble(sources(path, moe_places, dense_places), leaf, lookup)
              for path, leaf in flatten(template).items()}
    for path, leaf in dense_flat.items():
        check(path in used, f"upcycle: the dense checkpoint's {path} {_shape(leaf)} has no "
                            "place in the MoE model; its config differs from the dense run's "
                            "beyond the MoE layers")
    return _rebuild(template, values)


def slot_owners(opt: Tree, params: Tree) -> dict[str, tuple[str, str]]:
    """Optimizer-state leaf path -> (parameter path, slot name) for every leaf that belongs to
    one parameter; the leaves shared by all parameters are left out.

    A slot tree either mirrors the parameters (AdamW mu, nu: slot 'opt_state/0/mu/*') or is a
    list with one entry per parameter leaf in jax.tree.leaves order (moejax's per-matrix
    Adafactor: slot 'opt_state/0/*/0/v_row'). The same optimizer settings give the same slot
    names for any model, which is how a dense slot finds the MoE slot it fills.
    """
    param_paths = list(flatten(params))
    wanted = set(param_paths)
    owners: dict[str, tuple[str, str]] = {}

    def walk(node, prefix):
        if not isinstance(node, dict):
            return
        inner = flatten(node)
        if set(inner) == wanted:                                       # mirrors the params
            owners.update({f"{prefix}{p}": (p, f"{prefix}*") for p in inner})
            return
        keys = [_key(k) for k in node]
        if len(param_paths) > 1 and sorted(keys, key=lambda k: (len(k), k)) == [
                str(i) for i in range(len(param_paths))]:               # one entry per leaf
            for k, child in node.items():
                owner = param_paths[int(_key(k))]
                within = flatten(child) if isinstance(child, dict) else {"": child}
                for p in within:
                    tail = f"/{p}" if p else ""
                    owners[f"{prefix}{_key(k)}{tail}"] = (owner, f"{prefix}*{tail}")
            return
        for k, child in node.items():
            walk(child, f"{prefix}{_key(k)}/")

    walk(opt, "")
    return owners


def _is_integer(x) -> bool:
    return np.issubdtype(np.dtype(x.dtype), np.integer)


def upcycle_optimizer(dense: Tree, template: Tree, dense_params: Tree, moe_params: Tree,
                      dense_cfg: ModelConfig, moe_cfg: ModelConfig, mode: str = "carry"
                      ) -> Tree:
    """The MoE optimizer's pure dict from the dense run's.

    dense, template: to_saveable(nnx.state(optimizer)) of the dense run and a fresh MoE
    optimizer; dense_params, moe_params: nnx.to_pure_dict(nnx.state(model, nnx.Param)) (or
    their shapes), which name the slots. mode: 'carry' or 'reset' (see the module docstring).
    """
    check_choice("upcycle optimizer_state", mode, OPTIMIZER_STATE_MODES)
    check_compatible(dense_cfg, moe_cfg)
    dense_flat = flatten(dense)
    dense_slots = {owner: path for path, owner in slot_owners(dense, dense_params).items()}
    moe_slots = slot_owners(template, moe_params)
    moe_places, dense_places = _moe_places(moe_cfg), layer_places(dense_cfg)
    values = {}
    for path, leaf in flatten(template).items():
        if path in moe_slots:
            if mode == "reset":
                values[path] = leaf
                continue
            param, slot = moe_slots[path]
            values[path] = _assemble(
                sources(param, moe_places, dense_places), leaf,
                lambda p, slot=slot: dense_flat.get(dense_slots.get((p, slot))),
                f"optimizer slot {slot} of ")
        elif mode == "carry" or _is_integer(leaf):                   # shared: counters
            old = dense_flat.get(path)
            check(old is not None and tuple(old.shape) == tuple(leaf.shape),
                  f"upcycle: the optimizer state's {path} {_shape(leaf)} has no counterpart "
                  f"in the dense checkpoint ({'none' if old is None else _shape(old)}); "
                  "use the dense run's optimizer settings")
            values[path] = jnp.asarray(old, leaf.dtype)
        else:
            values[path] = leaf
    return _rebuild(template, values)
