"""Numerical health of training: which quantities of a step were not
finite, recorded on the device step by step and checked on the host when
the loop logs or saves (`DivergenceError`, or a count of skipped steps)."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unetjax.runtime.errors import DivergenceError


def initial_health() -> dict[str, jax.Array]:
  """Steps taken, the first with a non-finite quantity (0: none), which one
  (an index into `quantity_names`) and how many steps had one."""
  return {key: jnp.zeros((), jnp.int32) for key in
          ("step", "first_bad_step", "first_bad_quantity", "bad_steps")}


CHECK_BLOCK = 1024


def nonfinite_flags(loss, grads) -> jax.Array:
  """One flag per quantity: the loss and each gradient.

  All quantities are checked in one reduction, not one each: those were
  about 150 small kernels and 0.5-1 s of XLA compile on 2 cores. Quantities
  of CHECK_BLOCK elements or more are cut into rows of that many (the last
  padded with zeros), the smaller ones checked element by element, and each
  row's or element's verdict goes to the quantity it came from.

  The updated parameters are not checked: the package's optimizers keep
  them finite while the gradients are (an overflowing update shows as a
  non-finite loss one step later), and a check per parameter costs XLA
  another few hundred small kernels to compile (about 0.7 s on 2 cores).
  """
  leaves = [loss] + jax.tree.leaves(grads)
  small = [i for i, x in enumerate(leaves) if x.size < CHECK_BLOCK]
  large = [i for i, x in enumerate(leaves) if x.size >= CHECK_BLOCK]
  verdicts, owners = [], []
  if small:
    values = jnp.concatenate([leaves[i].ravel() for i in small])
    verdicts.append(~jnp.isfinite(values))
    owners.append(np.repeat(small, [leaves[i].size for i in small]))
  if large:
    rows = jnp.concatenate([_as_rows(leaves[i]) for i in large])
    verdicts.append(~jnp.all(jnp.isfinite(rows), axis=1))
    owners.append(np.repeat(large, [-(-leaves[i].size // CHECK_BLOCK)
                                    for i in large]))
  bad = jax.ops.segment_max(jnp.concatenate(verdicts).astype(jnp.int32),
                            np.concatenate(owners),
                            num_segments=len(leaves))
  return bad > 0


def _as_rows(x: jax.Array) -> jax.Array:
  flat = x.ravel()
  padding = -flat.size % CHECK_BLOCK
  return jnp.pad(flat, (0, padding)).reshape(-1, CHECK_BLOCK)


def record_health(health, bad) -> dict[str, jax.Array]:
  step = health["step"] + 1
  first = (health["first_bad_step"] == 0) & bad.any()
  return {"step": step,
          "first_bad_step": jnp.where(first, step, health["first_bad_step"]),
          "first_bad_quantity": jnp.where(first, jnp.argmax(bad),
                                          health["first_bad_quantity"]),
          "bad_steps": health["bad_steps"] + bad.any()}


def quantity_names(experiment) -> list[str]:
  """What each of `nonfinite_flags` is about, for the error message."""
  model, _ = nnx.merge(experiment.graphdef, experiment.state)
  paths = [".".join(str(k) for k in path) for path, _ in
           nnx.to_flat_state(nnx.state(model, nnx.Param))]
  return ["loss"] + [f"the gradient of {p}" for p in paths]


def check_health(health, names: list[str], skip_nonfinite: bool,
                 last_checkpoint: int | None) -> int:
  """Raises DivergenceError on a non-finite step unless skipping those.

  Returns the number of skipped steps. Syncs with the device: call it when
  logging or saving, not every step.
  """
  first = int(health["first_bad_step"])
  if first and not skip_nonfinite:
    if last_checkpoint:
      kept, where = (f"checkpoint {last_checkpoint} is kept",
                     " and add --fresh, or use a new --workdir")
    else:
      kept, where = "no checkpoint was saved", " and run again"
    raise DivergenceError(
        f"training diverged at step {first}: "
        f"{names[int(health['first_bad_quantity'])]} is not finite (nan or "
        f"inf); stopped without saving, {kept} (lower "
        f"optimizer.learning_rate, or set skip_nonfinite_updates=True{where})")
  return int(health["bad_steps"])
