"""Parallelism: the device mesh, logical-axis sharding rules, explicit expert parallelism
(shard_map + all_to_all) and the multi-host runtime.

    mesh.py             MeshConfig -> jax Mesh with axes (data, fsdp, expert, model)
    rules.py            one table: logical axis names -> mesh axes; parameter placement
    expert_parallel.py  the MoE layer's experts across the `expert` axis (capacity plans)
    dropless.py         the same without capacity (ragged or padded all_to_all)
    distributed.py      jax.distributed.initialize and global arrays from per-process batches
"""

from moejax.parallel.distributed import global_batch, initialize
from moejax.parallel.dropless import expert_parallel_dropless
from moejax.parallel.expert_parallel import expert_parallel_ffn
from moejax.parallel.expert_shards import active_mesh, constrain_groups, expert_layout
from moejax.parallel.mesh import BATCH_AXES, MESH_AXES, MeshConfig, check_moe_fits, make_mesh
from moejax.parallel.rules import (LOGICAL_AXIS_RULES, like_parameters, logical_to_spec,
                                   shard_model, shard_optimizer, state_shardings)

__all__ = ["BATCH_AXES", "LOGICAL_AXIS_RULES", "MESH_AXES", "MeshConfig", "active_mesh",
           "check_moe_fits", "constrain_groups", "expert_layout", "expert_parallel_dropless",
           "expert_parallel_ffn", "global_batch", "initialize", "like_parameters",
           "logical_to_spec", "make_mesh", "shard_model", "shard_optimizer", "state_shardings"]
