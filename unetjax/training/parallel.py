"""Data parallelism over every device of every process, with one code path.

The batch is sharded along a 1-D mesh axis and the train state replicated;
XLA inserts the gradient all-reduce (and the cross-device BatchNorm
statistics), so 1 CPU, 8 GPUs or several hosts run the same jitted step.
"""
import itertools
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from unetjax.runtime import compilation_cache, xla_flags
from unetjax.runtime.errors import ConfigError

DATA_AXIS = "data"


def initialize_distributed() -> None:
  """Prepares JAX before its first computation: the package's XLA flags
  (`unetjax.runtime.xla_flags`) and compilation cache (`unetjax.runtime.compilation_cache`),
  then a multi-process run if the launcher set one.

  `JAX_COORDINATOR_ADDRESS` (host:port of process 0) is read by JAX itself;
  on a cluster JAX detects (SLURM, Open MPI, ...) that is all it needs. For
  a plain launch, set `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` too. On CPU
  the processes all-reduce through gloo, JAX's default CPU collectives.
  """
  xla_flags.configure()
  compilation_cache.configure()
  if (os.environ.get("JAX_COORDINATOR_ADDRESS")
      and not jax.distributed.is_initialized()):
    jax.distributed.initialize(num_processes=_env_int("JAX_NUM_PROCESSES"),
                               process_id=_env_int("JAX_PROCESS_ID"))


# How long a process waits for the others at `sync_processes`.
BARRIER_TIMEOUT_S = 900
_barrier_numbers = itertools.count()


def sync_processes(name: str) -> None:
  """Waits until every process has got here; nothing with one process.

  Call it before a collective that processes reach after unequal work
  (building the data and model, compiling): XLA's CPU collectives (Gloo)
  give a late peer only 30 s, then fail ("Gloo context initialization
  failed: DEADLINE_EXCEEDED ... 30s") and leave the others waiting for
  ever. This barrier is the coordination service's (not a collective),
  through Orbax's helper, and waits up to BARRIER_TIMEOUT_S.
  """
  if jax.process_count() == 1:
    return
  from orbax.checkpoint import multihost  # pylint: disable=g-import-not-at-top
  multihost.sync_global_processes(
      f"unetjax_{name}_{next(_barrier_numbers)}", timeout=BARRIER_TIMEOUT_S,
      processes=set(range(jax.process_count())))


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None:
    return None
  if not value.isdigit():
    raise ConfigError(f"environment variable {name}={value!r}: expected an "
                      "integer >= 0")
  return int(value)


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(key: str, batch_size: int) -> None:
  devices = jax.device_count()
  if batch_size % devices:
    raise ConfigError(f"config.{key}={batch_size} is not divisible by the "
                      f"{devices} devices it is sharded over")


def global_batch(local: dict[str, np.ndarray],
                 sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's rows of a batch -> one array sharded over all devices."""
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in local.items()}


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly sharded, multi-process) array gathered onto this host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of an array sharded along its first axis (the
  rows of the local batch it was made from), in order."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  shards = {shard.index[0].start or 0: shard.data
            for shard in x.addressable_shards}
  return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])


def gather_rows(rows: list[dict], indices: list[int]) -> list[dict]:
  """Every process's per-example dicts (same keys, scalar or fixed-size
  values), in the order of their example indices."""
  if jax.process_count() > 1:  # every process has rows of the same keys
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    count = int(np.max(multihost_utils.process_allgather(
        np.array(len(rows)))))
    keys = sorted(rows[0])
    local = {k: np.stack([np.asarray(r[k], np.float64) for r in rows])
             for k in keys}
    padded = {k: np.pad(v, [(0, count - len(v))] + [(0, 0)] * (v.ndim - 1))
              for k, v in local.items()}
    index = np.pad(np.asarray(indices), (0, count - len(indices)),
                   constant_values=-1)
    every = {k: multihost_utils.process_allgather(v).reshape(
        (-1,) + v.shape[1:]) for k, v in padded.items()}
    index = multihost_utils.process_allgather(index).reshape(-1)
    rows = [{k: every[k][i] for k in keys} for i in range(len(index))
            if index[i] >= 0]
    indices = index[index >= 0].tolist()
  order = np.argsort(np.asarray(indices), kind="stable")
  return [rows[i] for i in order]
