"""Learning-rate schedules and optimizers from config, against hand values.

`schedule(s)` is the learning rate of update s + 1 (optax counts updates
done). Epoch-based settings use 10 steps per epoch here, so PyTorch's
"epoch e" starts at step 10 * e.
"""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError
from unetjax.training import optimizers, schedules

STEPS_PER_EPOCH = 10


def _schedule(name, lr=1.0, num_steps=100, **settings):
  config = config_lib.base_config()
  config.optimizer.learning_rate = lr
  config.schedule.name = name
  config.schedule.update(settings)
  return schedules.build(config, STEPS_PER_EPOCH, num_steps)


def _values(schedule, steps):
  return [float(schedule(s)) for s in steps]


def test_step_decay_like_torch_steplr():
  # StepLR(step_size=2 epochs, gamma=0.5): halves at epochs 2, 4, ...
  schedule = _schedule("step", lr=0.1, gamma=0.5, step_size_epochs=2)
  assert _values(schedule, [0, 19, 20, 39, 40]) == pytest.approx(
      [0.1, 0.1, 0.05, 0.05, 0.025])


def test_multistep_like_torch_multisteplr():
  # MultiStepLR(milestones=[1, 3], gamma=0.1).
  schedule = _schedule("multistep", lr=0.1, gamma=0.1,
                       milestones_epochs=(1, 3))
  assert _values(schedule, [0, 9, 10, 29, 30, 99]) == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_reaches_alpha_at_the_last_step():
  schedule = _schedule("cosine", lr=1.0, num_steps=100, alpha=0.1)
  # 0.1 + 0.9 * (1 + cos(pi * s / 100)) / 2
  assert _values(schedule, [0, 50, 100]) == pytest.approx([1.0, 0.55, 0.1])
  assert float(schedule(25)) == pytest.approx(
      0.1 + 0.9 * (1 + np.cos(np.pi / 4)) / 2)


def test_warmup_then_cosine():
  schedule = _schedule("cosine", lr=2.0, num_steps=110, warmup_steps=10)
  # linear 0 -> 2 over 10 steps, then cosine over the remaining 100.
  assert _values(schedule, [0, 5, 10, 60, 110]) == pytest.approx(
      [0.0, 1.0, 2.0, 1.0, 0.0], abs=1e-6)


@pytest.mark.parametrize("name, expected", [
    # base 0.1, max 1.0, 10 steps up and 10 down; triangular2 halves the
    # amplitude every cycle: 0.9, 0.45, 0.225. Step 45 is halfway up cycle 2.
    ("triangular", [0.1, 0.55, 1.0, 0.55, 0.1, 1.0, 0.55]),
    ("triangular2", [0.1, 0.55, 1.0, 0.55, 0.1, 0.55, 0.2125]),
])
def test_cyclical(name, expected):
  schedule = _schedule(name, lr=0.1, max_learning_rate=1.0,
                       half_cycle_steps=10)
  assert _values(schedule, [0, 5, 10, 15, 20, 30, 45]) == pytest.approx(
      expected)


def test_constant():
  assert _values(_schedule("constant", lr=0.3), [0, 1000]) == pytest.approx(
      [0.3, 0.3])


def _updates(count, **optimizer):
  """The updates of `count` steps on w = 2 with a constant gradient of 1."""
  config = config_lib.base_config()
  config.optimizer.update(optimizer)
  tx = optimizers.build(config, optax.constant_schedule(
      config.optimizer.learning_rate))
  params = {"w": jnp.array(2.0)}
  state = tx.init(params)
  updates = []
  for _ in range(count):
    update, state = tx.update({"w": jnp.array(1.0)}, state, params)
    updates.append(float(update["w"]))
  return updates


@pytest.mark.parametrize("momentum, nesterov, expected", [
    (0.0, False, [-0.1, -0.1, -0.1]),
    # trace = g + 0.9 * trace: 1, 1.9, 2.71
    (0.9, False, [-0.1, -0.19, -0.271]),
    # Nesterov steps along g + 0.9 * trace: 1.9, 2.71, 3.439
    (0.9, True, [-0.19, -0.271, -0.3439]),
])
def test_sgd(momentum, nesterov, expected):
  assert _updates(3, name="sgd", learning_rate=0.1, momentum=momentum,
                  nesterov=nesterov) == pytest.approx(expected)


def test_adam_and_adamw():
  # Adam's first steps under a constant gradient move by lr (g / |g| = 1,
  # up to eps and float32 rounding); AdamW adds lr * weight_decay * w.
  assert _updates(2, name="adam", learning_rate=0.1) == pytest.approx(
      [-0.1, -0.1], rel=1e-4)
  assert _updates(1, name="adamw", learning_rate=0.1,
                  weight_decay=0.5) == pytest.approx([-0.1 - 0.1 * 0.5 * 2],
                                                     rel=1e-4)


@pytest.mark.parametrize("settings, error", [
    (dict(name="steps"), "schedule.name='steps'"),
    (dict(name="step", step_size_epochs=0), "schedule.step_size_epochs=0"),
    (dict(name="multistep", milestones_epochs=(3, 1)),
     "schedule.milestones_epochs"),
    (dict(name="triangular", max_learning_rate=0.0001),
     "schedule.max_learning_rate"),
])
def test_bad_schedule_settings_are_named(settings, error):
  with pytest.raises(ConfigError, match=error):
    _schedule(lr=0.001, **settings)


def test_adam_with_weight_decay_points_to_adamw():
  with pytest.raises(ConfigError, match="adamw"):
    _updates(1, name="adam", weight_decay=0.1)
