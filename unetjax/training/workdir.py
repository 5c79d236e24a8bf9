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

from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import WorkdirError

# Keys a resumed run may change: how long and how often, not what is trained.
RESUMABLE_CHANGES = ("num_steps", "num_epochs", "log_every_steps",
                     "eval_every_steps", "keep_checkpoints",
                     "num_sample_images")
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.json"
FACTS_FILE = "experiment.json"


def check_path(workdir: str) -> None:
  """Refuses a workdir path that cannot hold a run, before anything exists.

  Names the culprit: a parent that is a file or not writable, a name too
  long for the file system, or an existing workdir whose `.lock`,
  `checkpoints` or `config.json` is not what a run leaves there.
  """
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"workdir {workdir} is a file, not a directory")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f"workdir {workdir}: {existing} is a file, not a "
                       "directory")
  limit = os.pathconf(existing, "PC_NAME_MAX")
  for part in os.path.relpath(path, existing).split(os.sep):
    if len(part.encode()) > limit:
      raise WorkdirError(f"workdir {workdir}: the name {part[:40]}... is "
                         f"{len(part.encode())} bytes; the file system "
                         f"allows {limit}")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise WorkdirError(f"workdir {workdir}: {existing} is not writable")
  if existing != path:
    return
  expected = {LOCK_FILE: os.path.isfile, CONFIG_FILE: os.path.isfile,
              CHECKPOINTS: os.path.isdir}
  for name, is_right in expected.items():
    entry = os.path.join(path, name)
    if os.path.lexists(entry) and not is_right(entry):
      kind = "a directory" if name == CHECKPOINTS else "a file"
      raise WorkdirError(f"workdir {workdir}: {entry} is not {kind}; move it "
                         "away or use another --workdir")


def has_results(workdir: str) -> bool:
  """Whether the workdir holds a committed checkpoint or final metrics:
  something a run with another config would lose."""
  checkpoints = os.path.join(workdir, CHECKPOINTS)
  return (os.path.exists(os.path.join(workdir, METRICS_FILE))
          or (os.path.isdir(checkpoints)
              and any(name.isascii() and name.isdigit()
                      for name in os.listdir(checkpoints))))


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
  if not blocking or not has_results(workdir):
    return None  # no checkpoint, no metrics: nothing to resume or to lose
  details = "; ".join(f"{k}: {old!r} -> {new!r}"
                      for k, (old, new) in list(blocking.items())[:5])
  return f"workdir {workdir} holds a different experiment ({details})"


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir that holds something other than this experiment."""
  reason = conflict(workdir, config)
  if reason:
    raise WorkdirError(f"{reason}; use a new --workdir, or --fresh to train "
                       "in a new sibling directory")


def check_step_folders(workdir: str) -> None:
  """Refuses an empty checkpoints/<step>/ folder: Orbax renames a step's
  folder to its number only once it holds the checkpoint, so an empty one
  was made by hand or by a copy that failed, and taking it for a step
  would resume from nothing (or call the run longer than it is)."""
  checkpoints = os.path.join(workdir, CHECKPOINTS)
  if not os.path.isdir(checkpoints):
    return
  for name in sorted(os.listdir(checkpoints)):
    path = os.path.join(checkpoints, name)
    if name.isascii() and name.isdigit() and os.path.isdir(path) and not (
        os.listdir(path)):
      raise WorkdirError(f"{path} is an empty folder, not a checkpoint "
                         "(Orbax never wrote it); move it away, then run "
                         "the same command again")


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
    blocking = [k for k in changed if k not in RESUMABLE_CHANGES]
    if blocking:  # `conflict` let it through: the old run saved nothing
      print(f"{workdir} holds no checkpoint of its earlier run; starting "
            f"over there with changed {', '.join(blocking[:5])}", flush=True)
    logging.info("Resuming with changed %s", ", ".join(
        f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()))
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config_lib.to_json(config))
  os.replace(tmp, path)


def read_json_object(path: str, error: type[Exception], what: str,
                     advice: str) -> dict:
  """A workdir file that must hold a JSON object; anything else is
  `error`, one line naming the file, what it should hold and `advice`."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise error(f"{path} is unreadable ({_one_line(e)}); {advice}") from e
  if not isinstance(value, dict):
    raise error(f"{path} holds a JSON {type(value).__name__}, not the "
                f"object of {what}; {advice}")
  return value


def _changes(path: str, config: ml_collections.ConfigDict) -> dict:
  old = read_json_object(path, WorkdirError, "a saved config",
                         "not touching this workdir")
  return diff(old, json.loads(config_lib.to_json(config)))


def diff(old: dict, new: dict) -> dict[str, tuple]:
  """{dotted key: (old value, new value)} for every key that differs."""
  old_flat, new_flat = config_lib.flat_items(old), config_lib.flat_items(new)
  return {k: (old_flat.get(k), new_flat.get(k))
          for k in sorted(set(old_flat) | set(new_flat))
          if old_flat.get(k) != new_flat.get(k)}


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split())[:200]
