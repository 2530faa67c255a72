"""One process of the multi-process test (tests/test_multihost.py); run as a script.

    python tests/multihost_worker.py single OUT.json [--steps N]
    python tests/multihost_worker.py multi OUT.json --process_id I --port P [--steps N] [--forever]

single: one process with 8 CPU devices.  multi: one of two processes with 4 CPU devices each,
connected through jax.distributed on 127.0.0.1:P with gloo CPU collectives.  Both build the same
tiny decoder MoE under a data=2 × expert=4 mesh of 8 devices, so the MoE layer all_to_alls
tokens to experts (across the two processes in multi mode), and train it on the same global
batch.  Every process writes OUT.json.p<process_id> with the loss of each step and, at the end,
the sum and sum of squares of every parameter.  --forever trains until killed, printing
"step N done" after each step (the failure-detection test).
"""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=("single", "multi"))
parser.add_argument("out")
parser.add_argument("--process_id", type=int, default=0)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--forever", action="store_true")
parser.add_argument("--heartbeat_timeout", type=int, default=10)
args = parser.parse_args()

# Before jax is imported: the devices of this process and a fast compile.
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count="
                           f"{8 if args.mode == 'single' else 4} "
                           "--xla_backend_optimization_level=0")
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from moejax.config import MoeConfig
from moejax.models import build_model
from moejax.models.config import ModelConfig
from moejax.parallel import MeshConfig, global_batch, initialize, make_mesh, shard_model
from moejax.train.optimizer import make_optimizer
from moejax.train.step import train_step

BATCH, LENGTH, VOCAB = 8, 16, 64
MODEL = ModelConfig(
    arch="decoder", vocab_size=VOCAB, d_model=32, num_heads=2, head_dim=16, d_ff=64,
    num_layers=2, moe_layout="every", moe_every=1,
    moe=MoeConfig(num_experts=8, num_selected_experts=2, hidden_dim=32, group_size=8,
                  capacity_factor=1.0, min_capacity=1, load_balance_loss=0.01,
                  router_z_loss=1e-3))
OPTIMIZER = ml_collections.ConfigDict({
    "name": "adafactor", "learning_rate": 0.01, "schedule": "constant", "warmup_steps": 0,
    "weight_decay": 0.0, "b1": 0.9, "b2": 0.99, "grad_clip_norm": 0.0})


def global_numpy_batch(step: int) -> dict:
    """The whole batch of a step, the same in every process (rows split by process below)."""
    rng = np.random.default_rng(1234 + step)
    tokens = rng.integers(1, VOCAB, size=(BATCH, LENGTH + 1), dtype=np.int32)
    segment_ids = np.ones((BATCH, LENGTH), np.int32)
    segment_ids[::2, LENGTH // 2:] = 2                      # two packed documents in even rows
    positions = np.tile(np.arange(LENGTH, dtype=np.int32), (BATCH, 1))
    positions[::2, LENGTH // 2:] -= LENGTH // 2
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": segment_ids,
            "positions": positions, "loss_mask": np.ones((BATCH, LENGTH), np.float32)}


def local_rows(batch: dict) -> dict:
    """This process's rows: process p holds rows [p·b, (p+1)·b) (jax.make_mesh device order)."""
    b = BATCH // jax.process_count()
    p = jax.process_index()
    return {k: v[p * b:(p + 1) * b] for k, v in batch.items()}


def to_host(x) -> np.ndarray:
    """A replicated (jit output) array as numpy, in every process."""
    assert x.is_fully_replicated, x.sharding
    return np.asarray(x.addressable_data(0))


def main():
    if args.mode == "multi":
        initialize(f"127.0.0.1:{args.port}", 2, args.process_id, cpu_collectives="gloo",
                   heartbeat_timeout_seconds=args.heartbeat_timeout, initialization_timeout=60)
    start = time.time()
    mesh = make_mesh(MeshConfig(data=2, expert=4))
    assert mesh.size == 8 and jax.local_device_count() == (8 if args.mode == "single" else 4)
    record = {"process_id": jax.process_index(), "process_count": jax.process_count(),
              "losses": [], "grad_norms": []}

    def write():
        with open(f"{args.out}.p{jax.process_index()}", "w") as f:
            json.dump(record, f)

    with jax.set_mesh(mesh):
        model = shard_model(lambda: build_model(
            MODEL, rngs=nnx.Rngs(params=0, dropout=1, routing=2)), mesh)
        optimizer = make_optimizer(OPTIMIZER, model, args.steps)
        step = 0
        while args.forever or step < args.steps:
            batch = global_batch(local_rows(global_numpy_batch(step % 4)), mesh)
            metrics = train_step(model, optimizer, batch, 1e-4)
            record["losses"].append(float(to_host(metrics["loss"])))
            record["grad_norms"].append(float(to_host(metrics["grad_norm"])))
            step += 1
            print(f"step {step} done loss={record['losses'][-1]:.6f} "
                  f"t={time.time() - start:.1f}s", flush=True)
            if args.forever:
                time.sleep(0.05)

        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        flat = {jax.tree_util.keystr(path): leaf
                for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
        replicated = NamedSharding(mesh, P())
        sums = jax.jit(lambda t: {k: (jnp.sum(v), jnp.sum(jnp.square(v))) for k, v in t.items()},
                       out_shardings=replicated)(flat)
        record["checksums"] = {k: [float(to_host(s)), float(to_host(q))]
                               for k, (s, q) in sums.items()}
    write()
    print(f"finished in {time.time() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
