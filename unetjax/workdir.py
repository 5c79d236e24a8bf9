"""Workdir safety: one run at a time, never two experiments in one dir.

Nothing here deletes or overwrites what a user made: a workdir holding a
different experiment, or a directory that is not a workdir at all, is
refused; `fresh_sibling` finds a new directory next to it instead.
"""
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
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked(workdir: str):
  """Holds an exclusive lock on the workdir; the OS drops it if we die.

  A workdir this call created is removed again when the run fails before
  writing anything into it, so a rejected run leaves no trace.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} is a file, not a directory")
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
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
    if created and os.listdir(workdir) == [LOCK_FILE]:
      os.remove(path)
      os.rmdir(workdir)
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def conflict(workdir: str, config: ml_collections.ConfigDict) -> str | None:
  """Why `workdir` cannot hold a run of `config`, or None when it can."""
  if not os.path.isdir(workdir):
    return None
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    others = sorted(set(os.listdir(workdir)) - {LOCK_FILE})
    if not others:
      return None
    return (f"workdir {workdir} is not empty and has no {CONFIG_FILE}, so it "
            f"is not a unetjax workdir (it holds {', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''})")
  blocking = {k: v for k, v in _changes(path, config).items()
              if k not in RESUMABLE_CHANGES}
  if not blocking:
    return None
  details = "; ".join(f"{k}: {old!r} -> {new!r}"
                      for k, (old, new) in list(blocking.items())[:5])
  return f"workdir {workdir} holds a different experiment ({details})"


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir that holds something other than this experiment."""
  reason = conflict(workdir, config)
  if reason:
    raise WorkdirError(f"{reason}; use a new --workdir, or --fresh to train "
                       "in a new sibling directory")


def fresh_sibling(workdir: str, config: ml_collections.ConfigDict) -> str:
  """`workdir`, or the first of workdir-2, -3, ... free for this experiment.

  A sibling already holding this experiment counts as free, so re-running
  the same command with --fresh resumes there instead of starting over.
  """
  candidate, number = workdir, 1
  while conflict(candidate, config):
    number += 1
    candidate = f"{workdir.rstrip(os.sep)}-{number}"
  return candidate


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes config.json; a resumed run logs the (resumable) changes."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    changed = _changes(path, config)
    if not changed:
      return
    logging.info("Resuming with changed %s", ", ".join(
        f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()))
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config_lib.to_json(config))
  os.replace(tmp, path)


def _changes(path: str, config: ml_collections.ConfigDict) -> dict:
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{path} is unreadable ({e}); not touching this "
                       "workdir") from e
  return diff(old, json.loads(config_lib.to_json(config)))


def diff(old: dict, new: dict) -> dict[str, tuple]:
  """{dotted key: (old value, new value)} for every key that differs."""
  old_flat, new_flat = config_lib.flat_items(old), config_lib.flat_items(new)
  return {k: (old_flat.get(k), new_flat.get(k))
          for k in sorted(set(old_flat) | set(new_flat))
          if old_flat.get(k) != new_flat.get(k)}
