"""Determinism and crash-safe resume, checked bit for bit on CPU.

One uninterrupted reference run is compared with (a) a second run of the
same config and (b) a chain of runs of the same command that are killed
(SIGKILL) while a checkpoint is being written, in the middle of training
steps and during evaluation, then stopped by SIGTERM and by SIGINT, and
finally allowed to finish. All must end with the same parameters, optimizer
and RNG state, metrics and history.

Run as a script, this file is the crash driver: it stops the CLI at a
named point (printing a marker and waiting, so the test can signal it at
exactly that point) by patching the functions involved, which keeps test
hooks out of the package.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "CRASH POINT REACHED"
NUM_STEPS, LOG_EVERY, EVAL_EVERY = 12, 3, 4


def _config(**overrides):
  from tests.conftest import tiny_cells_config  # pylint: disable=g-import-not-at-top
  return tiny_cells_config(**{
      "num_steps": NUM_STEPS, "log_every_steps": LOG_EVERY,
      "eval_every_steps": EVAL_EVERY, **overrides})


def _cli_overrides(config) -> list[str]:
  """--config.KEY=VALUE flags turning configs/cells.py into `config`."""
  from configs import cells  # pylint: disable=g-import-not-at-top
  from unetjax.runtime import config as config_lib  # pylint: disable=g-import-not-at-top
  base = config_lib.flat_items(cells.get_config().to_dict())
  wanted = config_lib.flat_items(config.to_dict())
  return [f"--config.{k}={v}" for k, v in wanted.items() if base[k] != v]


def final_state(workdir: str, step: int) -> list[np.ndarray]:
  """Every array of the checkpoint at `step`: params, optimizer, RNG keys."""
  import jax  # pylint: disable=g-import-not-at-top

  from unetjax.runtime import checkpointing  # pylint: disable=g-import-not-at-top
  from unetjax.training import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  experiment = experiment_lib.build_experiment(_config())
  mngr = checkpointing.manager(workdir, keep=5, best_metric="val/dice",
                               best_mode="max", read_only=True)
  state, _ = checkpointing.restore(mngr, step, experiment.state)
  return [np.asarray(jax.random.key_data(x)
                     if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                     else x) for x in jax.tree.leaves(state)]


def results(workdir: str) -> dict:
  """metrics.json without timings, and the train/val history."""
  from unetjax.runtime import history  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  records = [{k: v for k, v in r.items() if k.split("/")[0] in
              ("step", "train", "val")} for r in history.read(workdir)]
  return {"metrics": {k: metrics[k] for k in ("train", "val", "test")},
          "history": [r for r in records if len(r) > 1]}


def assert_same_run(workdir: str, reference: str) -> None:
  assert results(workdir) == results(reference)
  for a, b in zip(final_state(workdir, NUM_STEPS),
                  final_state(reference, NUM_STEPS), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("reference"))
  train.train_and_evaluate(_config(), workdir)
  return workdir


def test_same_config_and_seed_give_a_bit_identical_run(reference, tmp_path):
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(_config(), str(tmp_path))
  assert_same_run(str(tmp_path), reference)


def test_a_different_seed_gives_a_different_run(reference, tmp_path):
  """The comparison above can fail: it sees a change of seed."""
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(_config(seed=1, num_steps=LOG_EVERY),
                           str(tmp_path))
  def first_loss(workdir):
    return next(r["train/loss"] for r in results(workdir)["history"]
                if "train/loss" in r)
  assert first_loss(str(tmp_path)) != first_loss(reference)


def _start(workdir: str, point: str) -> subprocess.Popen:
  """The CLI on `workdir`, to stop at `point` (see `_install`)."""
  argv = [sys.executable, os.path.abspath(__file__), point,
          "--config", os.path.join(REPO, "configs", "cells.py"),
          "--workdir", workdir] + _cli_overrides(_config())
  log = open(os.path.join(os.path.dirname(workdir), f"{point}.log"), "w")
  return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=log, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _wait_for_marker(process: subprocess.Popen) -> None:
  for line in process.stdout:
    if MARKER in line:
      return
  pytest.fail(f"the run ended (rc {process.wait()}) before its crash point")


def _kill_at(workdir: str, point: str) -> None:
  process = _start(workdir, point)
  _wait_for_marker(process)
  process.kill()
  process.wait()


def _committed_steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(path) if s.isdigit())


def test_killed_and_stopped_runs_resume_to_the_same_result(
    reference, tmp_path, monkeypatch):
  from unetjax.runtime.errors import TrainingStopped  # pylint: disable=g-import-not-at-top
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "wd")

  # SIGKILL while the first checkpoint (step 4) is being committed, with
  # training steps running meanwhile: only Orbax's temporary dir is left.
  _kill_at(workdir, "checkpoint")
  leftovers = os.listdir(os.path.join(workdir, "checkpoints"))
  assert _committed_steps(workdir) == [] and leftovers, leftovers

  # SIGKILL between two steps; the resumed run ignores the leftover and
  # removes it.
  _kill_at(workdir, "step:7")
  assert _committed_steps(workdir) in ([], [4])
  assert not [d for d in os.listdir(os.path.join(workdir, "checkpoints"))
              if not d.isdigit()]

  # SIGKILL during the evaluation at step 8, before its checkpoint.
  _kill_at(workdir, "eval")
  assert 8 not in _committed_steps(workdir)

  # SIGTERM before step 10: finishes the step, saves, exits 128 + 15.
  process = _start(workdir, "step:10")
  _wait_for_marker(process)
  process.send_signal(signal.SIGTERM)
  open(os.path.join(workdir, "continue"), "w").close()
  assert process.wait(timeout=300) == 128 + signal.SIGTERM
  os.remove(os.path.join(workdir, "continue"))
  with open(os.path.join(str(tmp_path), "step:10.log")) as f:
    log = f.read()
  assert "stopped by SIGTERM after step 10" in log
  assert "Traceback" not in log
  assert _committed_steps(workdir)[-1] == 10

  # SIGINT (Ctrl-C) in this process at step 11, then run to the end with
  # keep_checkpoints=1 (a resumable change).
  real_batches = train.input_pipeline.train_batches

  def interrupted_batches(*args, start_step, **kwargs):
    for step, batch in enumerate(real_batches(*args, start_step=start_step,
                                              **kwargs), start_step + 1):
      if step == 11:
        os.kill(os.getpid(), signal.SIGINT)
      yield batch

  handler = signal.getsignal(signal.SIGINT)
  monkeypatch.setattr(train.input_pipeline, "train_batches",
                      interrupted_batches)
  with pytest.raises(TrainingStopped, match="SIGINT after step 11"):
    train.train_and_evaluate(_config(), workdir)
  monkeypatch.undo()
  assert _committed_steps(workdir)[-1] == 11
  assert signal.getsignal(signal.SIGINT) is handler

  train.train_and_evaluate(_config(keep_checkpoints=1), workdir)
  assert_same_run(workdir, reference)
  # Step 11 had no metrics: dropped once it was no longer the latest.
  steps = _committed_steps(workdir)
  assert 11 not in steps and steps[-1] == NUM_STEPS


def _pause() -> None:
  """Tells the test where we are, then waits for a signal or `continue`."""
  print(MARKER, flush=True)
  resume = os.path.join(_WORKDIR, "continue")
  while not os.path.exists(resume):
    time.sleep(0.05)


def _install(point: str) -> None:
  """Patches the package or Orbax to call `_pause` at `point`."""
  from unetjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  if point.startswith("step:"):
    pause_before = int(point.split(":")[1])
    real_batches = input_pipeline.train_batches

    def train_batches(*args, start_step, **kwargs):
      for step, batch in enumerate(real_batches(
          *args, start_step=start_step, **kwargs), start_step + 1):
        if step == pause_before:
          _pause()
        yield batch

    input_pipeline.train_batches = train_batches
  elif point == "eval":
    real_eval = input_pipeline.eval_batches

    def eval_batches(*args, **kwargs):
      for i, batch in enumerate(real_eval(*args, **kwargs)):
        if i == 1:
          _pause()
        yield batch

    input_pipeline.eval_batches = eval_batches
  elif point == "checkpoint":
    from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
      _pause()
      await real_finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize
  else:
    raise ValueError(f"unknown crash point {point!r}")


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  _WORKDIR = sys.argv[sys.argv.index("--workdir") + 1]
  _install(sys.argv.pop(1))
  from unetjax import main  # pylint: disable=g-import-not-at-top
  main.run()
