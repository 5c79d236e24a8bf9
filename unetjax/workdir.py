"""Workdir safety: one run at a time, and never two experiments in one dir."""
import contextlib
import fcntl
import json
import logging
import os

import ml_collections

from unetjax import config as config_lib
from unetjax.errors import WorkdirError

# Keys a resumed run may change: how long and how often, not what is trained.
RESUMABLE_CHANGES = ("num_steps", "num_epochs", "log_every_steps",
                     "eval_every_steps", "keep_checkpoints",
                     "num_sample_images")


@contextlib.contextmanager
def locked(workdir: str):
  """Holds an exclusive lock on the workdir; the OS drops it if we die."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, ".lock")
  handle = open(path, "a+")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    owner = handle.read().strip() or "another process"
    handle.close()
    raise WorkdirError(f"workdir {workdir} is in use by {owner}; wait for it "
                       "or use another --workdir") from None
  handle.seek(0)
  handle.truncate()
  handle.write(f"pid {os.getpid()}")
  handle.flush()
  try:
    yield
  finally:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def save_or_check_config(workdir: str,
                         config: ml_collections.ConfigDict) -> None:
  """Writes config.json, or checks a resumed run trains the same thing."""
  path = os.path.join(workdir, "config.json")
  new = json.loads(config_lib.to_json(config))
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    changed = diff(old, new)
    blocking = [k for k in changed if k not in RESUMABLE_CHANGES]
    if blocking:
      details = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}"
                          for k in blocking[:5])
      raise WorkdirError(
          f"workdir {workdir} holds a different experiment ({details}); "
          "use a new --workdir to start fresh")
    if not changed:
      return
    logging.info("Resuming with changed %s", ", ".join(
        f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in changed))
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config_lib.to_json(config))
  os.replace(tmp, path)


def diff(old: dict, new: dict) -> dict[str, tuple]:
  """{dotted key: (old value, new value)} for every key that differs."""
  old_flat, new_flat = config_lib.flat_items(old), config_lib.flat_items(new)
  return {k: (old_flat.get(k), new_flat.get(k))
          for k in sorted(set(old_flat) | set(new_flat))
          if old_flat.get(k) != new_flat.get(k)}
