"""A non-finite loss or gradient stops training, or is skipped when asked.

The non-finite values are injected by wrapping the task's loss, after a
short healthy run, so the expected step and quantity are known exactly.
"""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import tiny_cells_config
from tests.test_resume import final_state
from unetjax.runtime import history
from unetjax.runtime.errors import DivergenceError
from unetjax.training import experiment as experiment_lib
from unetjax.training import health as health_lib
from unetjax.training import train

HEALTHY_STEPS = 4


class PoisonedLoss:
  """The experiment's task with `poison(loss, logits)` as its loss."""

  def __init__(self, task, poison):
    self._task = task
    self._poison = poison

  def __getattr__(self, name):
    return getattr(self._task, name)

  def loss_and_outputs(self, logits, batch):
    loss, outputs = self._task.loss_and_outputs(logits, batch)
    return self._poison(loss, logits), outputs


def nan_loss(loss, logits):
  del logits
  return loss * jnp.nan


def nan_gradient(loss, logits):
  """Finite value, NaN gradient: d sqrt(u)/du is inf at u = 0, times 0."""
  return loss + 0.0 * jnp.sqrt(jnp.abs(logits - logits)).sum()


def _config(**overrides):
  return tiny_cells_config(**{"log_every_steps": 2, "eval_every_steps": 2,
                              "keep_checkpoints": 5, **overrides})


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
  """A workdir trained for HEALTHY_STEPS, checkpoints at 2 and 4."""
  workdir = str(tmp_path_factory.mktemp("healthy") / "wd")
  train.train_and_evaluate(_config(num_steps=HEALTHY_STEPS), workdir)
  return workdir


def _resume_poisoned(workdir, poison, **overrides):
  experiment = experiment_lib.build_experiment(_config(num_steps=8, **overrides))
  experiment.task = PoisonedLoss(experiment.task, poison)
  return train._train(experiment, workdir)  # pylint: disable=protected-access


def _steps(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir,
                                                        "checkpoints"))
                if s.isdigit())


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(
    healthy, tmp_path):
  workdir = shutil.copytree(healthy, tmp_path / "wd")
  with pytest.raises(DivergenceError) as error:
    _resume_poisoned(str(workdir), nan_loss)
  message = str(error.value)
  assert "diverged at step 5: loss is not finite" in message
  assert "checkpoint 4 is kept" in message and "\n" not in message
  assert _steps(workdir) == [2, 4]
  assert max(r["step"] for r in history.read(str(workdir))
             if "train/loss" in r) == 4


def test_nan_gradient_with_a_finite_loss_is_named(tmp_path):
  experiment = experiment_lib.build_experiment(_config(num_steps=2))
  experiment.task = PoisonedLoss(experiment.task, nan_gradient)
  with pytest.raises(DivergenceError,
                     match=r"step 1: the gradient of \S+ is not finite.*no "
                     "checkpoint was saved"):
    train._train(experiment, str(tmp_path))  # pylint: disable=protected-access
  assert _steps(tmp_path) == []


def test_skipping_nonfinite_updates_keeps_the_state_of_the_last_good_step(
    healthy, tmp_path):
  workdir = str(shutil.copytree(healthy, tmp_path / "wd"))
  final = _resume_poisoned(workdir, nan_loss, skip_nonfinite_updates=True)
  assert final["train"]["skipped_updates"] == 4
  for a, b in zip(final_state(workdir, 8), final_state(workdir, 4),
                  strict=True):
    assert (a == b).all()


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nonfinite_flags_name_exactly_the_bad_quantities(bad_value):
  block = health_lib.CHECK_BLOCK
  grads = {"a": np.zeros((3,), np.float32),  # small: checked per element
           "b": np.zeros((2, block), np.float32),  # whole rows
           "c": np.zeros((block + 5,), np.float32),  # last row padded
           "d": np.zeros((block - 1,), np.float32)}
  loss = np.float32(1.0)
  flags = jax.jit(health_lib.nonfinite_flags)
  # quantities: loss, then the gradients in key order a, b, c, d
  assert not flags(loss, grads).any()
  for name, index in [("a", 2), ("b", block), ("b", 2 * block - 1),
                      ("c", block - 1), ("c", block + 4), ("d", 0)]:
    bad = {k: v.copy() for k, v in grads.items()}
    bad[name].reshape(-1)[index] = bad_value
    want = [False] + [k == name for k in sorted(grads)]
    assert flags(loss, bad).tolist() == want, (name, index)
  assert flags(np.float32(bad_value), grads).tolist() == [True] + [False] * 4
