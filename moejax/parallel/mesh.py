"""The device mesh: axes data × fsdp × expert × model, from a config.

- data:   pure data parallelism (parameters replicated, batch split).
- fsdp:   data parallelism with parameters (their `embed` axis) split too (ZeRO-3 style).
- expert: expert parallelism; the batch is split over it as well (GShard: every device holds
          tokens and E / |expert| experts), and the MoE layer all_to_alls tokens to experts.
- model:  tensor parallelism of the hidden widths (`mlp`, `heads`, `vocab`).
The model axis is innermost, so on TPU/GPU it maps to the fastest links.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Mapping, Optional, Sequence

import jax
from jax.sharding import AxisType, Mesh

from moejax.errors import ConfigError, check
from moejax.routing.registry import family

MESH_AXES = ("data", "fsdp", "expert", "model")
BATCH_AXES = ("data", "fsdp", "expert")        # the axes a batch (and the MoE groups) split over


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Axis sizes; one of them may be -1 for "all remaining devices".

    num_devices: how many devices the mesh spans (-1: all of them; n: the first n, e.g. one
    device of a test machine that has eight).
    """
    data: int = -1
    fsdp: int = 1
    expert: int = 1
    model: int = 1
    num_devices: int = -1

    @classmethod
    def from_dict(cls, values: Mapping) -> "MeshConfig":
        fields = MESH_AXES + ("num_devices",)
        unknown = sorted(set(values) - set(fields))
        check(not unknown, f"mesh.{unknown[0] if unknown else ''} is not a mesh field; the "
                           f"fields are {', '.join(fields)}")
        return cls(**{k: values[k] for k in fields if k in values})

    def devices(self, available: Sequence[jax.Device]) -> list:
        """The devices the mesh spans (one ConfigError line if there are too few)."""
        n = self.num_devices
        check(isinstance(n, int) and (n >= 1 or n == -1),
              f"mesh.num_devices={n!r} must be a positive integer or -1 (all devices)")
        check(n == -1 or jax.process_count() == 1,
              f"mesh.num_devices={n}: with {jax.process_count()} processes the mesh must span "
              "every device (-1)")
        check(n <= len(available),
              f"mesh.num_devices={n} but only {len(available)} devices are available")
        return list(available) if n == -1 else list(available)[:n]

    def axis_sizes(self, num_devices: int) -> Dict[str, int]:
        """Resolved sizes; one ConfigError line if they do not multiply to num_devices."""
        sizes = {name: getattr(self, name) for name in MESH_AXES}
        for name, size in sizes.items():
            check(isinstance(size, int) and (size >= 1 or size == -1),
                  f"mesh.{name}={size!r} must be a positive integer or -1 (all remaining "
                  f"devices)")
        fill = [name for name, size in sizes.items() if size == -1]
        check(len(fill) <= 1, f"only one mesh axis may be -1; got {', '.join(fill)}")
        fixed = math.prod(size for size in sizes.values() if size != -1)
        if fill:
            check(num_devices % fixed == 0,
                  f"mesh {self._describe(sizes)} cannot fill {num_devices} devices: "
                  f"{num_devices} is not a multiple of {fixed}")
            sizes[fill[0]] = num_devices // fixed
        check(math.prod(sizes.values()) == num_devices,
              f"mesh {self._describe(sizes)} has {math.prod(sizes.values())} devices but "
              f"{num_devices} are available; the axis sizes must multiply to {num_devices}")
        return sizes

    @staticmethod
    def _describe(sizes: Mapping[str, int]) -> str:
        return " × ".join(f"{k}={v}" for k, v in sizes.items())


def make_mesh(cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A mesh over `devices` (default: every device of every process), axes MESH_AXES.

    Axis types are Auto: outside the MoE layer's shard_map, the compiler propagates the
    shardings that moejax.parallel.rules puts on parameters and batches.
    """
    devices = cfg.devices(jax.devices() if devices is None else devices)
    sizes = cfg.axis_sizes(len(devices))
    shape = tuple(sizes[name] for name in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def check_moe_fits(moe_cfg, mesh: Mesh) -> None:
    """E and the expert hidden width must suit the mesh (one ConfigError line if not)."""
    x = mesh.shape.get("expert", 1)
    e = moe_cfg.num_experts
    if family(moe_cfg).choice != "soft":               # Soft MoE's slots are not sharded by E
        check(e % x == 0 or x % e == 0,
              f"moe.num_experts={e} does not fit mesh.expert={x}: one must divide the other "
              f"(E/{x} experts per device, or all E on every device with each expert's tokens "
              f"split over {x}/E devices)")
    m = mesh.shape.get("model", 1)
    check(moe_cfg.hidden_dim % m == 0,
          f"moe.hidden_dim={moe_cfg.hidden_dim} is not divisible by mesh.model={m}")


def batch_shards(mesh: Mesh) -> int:
    """How many pieces a batch is split into (data × fsdp × expert)."""
    return math.prod(mesh.shape.get(name, 1) for name in BATCH_AXES)


__all__ = ["BATCH_AXES", "MESH_AXES", "MeshConfig", "make_mesh", "check_moe_fits",
           "batch_shards", "ConfigError"]
