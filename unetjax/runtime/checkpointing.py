"""Orbax checkpoints of the whole train state under `workdir/checkpoints`.

A checkpoint holds the model and optimizer state (which includes the
dropout RNG state), the training loop's own device state (the train-metric
accumulator of the current log window and the numerical-health counters)
and a small JSON record: the step, how many training examples were consumed
and the scalars last logged. Because the data order is a pure function of
(seed, step), that is enough to resume bit-exactly, wherever the run
stopped. Orbax writes each step to a temporary directory and renames it
when complete, so a crash mid-write leaves no checkpoint that would be
picked up; the manager removes such leftovers when it starts.
"""
import contextlib
import logging
import os
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp

from unetjax.runtime.errors import CheckpointError

_PRESERVE = ocp.checkpoint_managers


def manager(workdir: str, *, keep: int, best_metric: str, best_mode: str,
            read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the latest `keep` checkpoints and the best one by `best_metric`."""

  def metric(metrics: dict[str, float]) -> float:
    return metrics[best_metric]

  policy = _PRESERVE.AnyPreservationPolicy([
      _PRESERVE.LatestN(n=keep),
      _PRESERVE.BestN(get_metric_fn=metric, reverse=best_mode == "min", n=1,
                      keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=metric, best_mode=best_mode, preservation_policy=policy,
      read_only=read_only, create=not read_only,
      cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


@contextlib.contextmanager
def closing(mngr: ocp.CheckpointManager) -> Iterator[ocp.CheckpointManager]:
  """Closes the manager on the way out, waiting for saves still in flight.

  Also when the block raised: otherwise Orbax's background threads meet a
  shutting-down interpreter and print "Event loop is closed" tracebacks
  after the one-line error. A failure while closing after an error is
  logged, so the first error is the one reported.
  """
  try:
    yield mngr
  except BaseException:
    try:
      mngr.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("closing the checkpoint manager after an error: %s", e)
    raise
  mngr.close()


def save(mngr: ocp.CheckpointManager, step: int, state: Any,
         meta: dict[str, Any], metrics: dict[str, float] | None,
         loop: Any = None) -> None:
  """Starts an asynchronous save; `metrics` None keeps it out of BestN."""
  items = {"state": ocp.args.StandardSave(state),
           "meta": ocp.args.JsonSave(meta)}
  if loop is not None:
    items["loop"] = ocp.args.StandardSave(loop)
  mngr.save(step, args=ocp.args.Composite(**items), metrics=metrics,
            force=True)


def restore(mngr: ocp.CheckpointManager, step: int,
            abstract_state: Any) -> tuple[Any, dict[str, Any]]:
  """The state and record saved at `step`, shaped like `abstract_state`."""
  restored = _restore(mngr, step, state=ocp.args.StandardRestore(
      abstract_state), meta=ocp.args.JsonRestore())
  return restored["state"], restored["meta"]


def restore_training(mngr: ocp.CheckpointManager, step: int,
                     abstract_state: Any, abstract_loop: Any
                     ) -> tuple[Any, Any, dict[str, Any]]:
  """State, training-loop state and record: everything a resume needs."""
  restored = _restore(
      mngr, step, state=ocp.args.StandardRestore(abstract_state),
      loop=ocp.args.StandardRestore(abstract_loop),
      meta=ocp.args.JsonRestore())
  return restored["state"], restored["loop"], restored["meta"]


def _restore(mngr: ocp.CheckpointManager, step: int, **items) -> Any:
  path = os.path.join(str(mngr.directory), str(step))
  for name, args in items.items():
    if isinstance(args, ocp.args.StandardRestore):
      _check_shapes(os.path.join(path, name), args.item, path)
  try:
    return mngr.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # Orbax raises many types for a bad checkpoint.
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise CheckpointError(
        f"checkpoint {path} cannot be restored into this model: "
        f"{first_line[:300]}") from e


def _check_shapes(item_dir: str, abstract: Any, path: str) -> None:
  """Refuses a checkpoint whose arrays do not fit `abstract`, before reading.

  Orbax reads the arrays concurrently; when one read fails on a shape, the
  reads still in flight fail later on a closed event loop, and asyncio logs
  each with a traceback, after the one-line error and possibly in the middle
  of later output. The item's metadata (a small JSON file) says every
  array's shape, so the mismatch is found without starting a read. A
  metadata file that cannot be read is left to the restore to report.
  """
  try:
    stored = _shapes(ocp.StandardCheckpointer().metadata(item_dir)
                     .item_metadata)
  except Exception:  # pylint: disable=broad-except
    return
  wanted = _shapes(abstract)
  for name in sorted(wanted.keys() | stored.keys()):
    here, there = wanted.get(name), stored.get(name)
    if here != there:
      raise CheckpointError(
          f"checkpoint {path} cannot be restored into this model: {name} "
          f"has shape {_describe(there)} in the checkpoint and "
          f"{_describe(here)} in this model")


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Array shapes by path, with Orbax's and JAX's key spellings made one."""
  shapes = {}
  for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if getattr(leaf, "shape", None) is None:
      continue
    names = [str(next(getattr(k, a) for a in ("key", "idx", "name")
                      if hasattr(k, a))) for k in keys]
    shapes["/".join(n for n in names if n != "value")] = tuple(leaf.shape)
  return shapes


def _describe(shape: tuple[int, ...] | None) -> str:
  return "(absent)" if shape is None else str(shape)


def resolve_step(mngr: ocp.CheckpointManager, which: str) -> int:
  """'latest', 'best' or a step number -> an existing step."""
  steps = mngr.all_steps()
  where = mngr.directory
  if not steps:
    raise CheckpointError(f"no checkpoint in {where}")
  if which == "latest":
    return mngr.latest_step()
  if which == "best":
    return mngr.best_step() or mngr.latest_step()
  if not (which.isascii() and which.isdigit()) or int(which) not in steps:
    raise CheckpointError(f"checkpoint {which!r} not in {where}; it has "
                          f"steps {sorted(steps)}, 'latest' and 'best'")
  return int(which)
