"""Learning-rate schedules by config name.

Optax provides all but the cyclical ones. Epoch-based settings are turned
into steps here so configs can speak the language of the papers and
PyTorch scripts they reproduce (StepLR's step size is in epochs).
"""
import jax.numpy as jnp
import ml_collections
import optax

from unetjax.runtime.errors import ConfigError


def triangular(base_lr: float, max_lr: float, half_cycle_steps: int,
               decay_per_cycle: float = 1.0) -> optax.Schedule:
  """Cyclical LR (Smith, 2017): linear base -> max -> base, repeated.

  decay_per_cycle=1 is the "triangular" policy, 0.5 is "triangular2".
  """
  def schedule(step):
    cycle = jnp.floor(step / (2 * half_cycle_steps))
    x = jnp.abs(step / half_cycle_steps - 2 * cycle - 1)
    amplitude = (max_lr - base_lr) * decay_per_cycle ** cycle
    return base_lr + amplitude * jnp.maximum(0.0, 1.0 - x)
  return schedule


def _constant(lr, cfg, steps_per_epoch, num_steps):
  del cfg, steps_per_epoch, num_steps
  return optax.constant_schedule(lr)


def _step(lr, cfg, steps_per_epoch, num_steps):
  del num_steps
  return optax.exponential_decay(
      lr, transition_steps=cfg.step_size_epochs * steps_per_epoch,
      decay_rate=cfg.gamma, staircase=True)


def _multistep(lr, cfg, steps_per_epoch, num_steps):
  del num_steps
  return optax.piecewise_constant_schedule(
      lr, {int(m * steps_per_epoch): cfg.gamma for m in cfg.milestones_epochs})


def _cosine(lr, cfg, steps_per_epoch, num_steps):
  del steps_per_epoch
  return optax.cosine_decay_schedule(
      lr, decay_steps=max(1, num_steps - cfg.warmup_steps), alpha=cfg.alpha)


def _triangular(lr, cfg, steps_per_epoch, num_steps):
  del steps_per_epoch, num_steps
  return triangular(lr, cfg.max_learning_rate, cfg.half_cycle_steps)


def _triangular2(lr, cfg, steps_per_epoch, num_steps):
  del steps_per_epoch, num_steps
  return triangular(lr, cfg.max_learning_rate, cfg.half_cycle_steps, 0.5)


SCHEDULES = {
    "constant": _constant,
    "step": _step,
    "multistep": _multistep,
    "cosine": _cosine,
    "triangular": _triangular,
    "triangular2": _triangular2,
}


def build(config: ml_collections.ConfigDict, steps_per_epoch: int,
          num_steps: int) -> optax.Schedule:
  """The schedule named by config.schedule, starting at the optimizer's LR."""
  cfg = config.schedule
  lr = config.optimizer.learning_rate
  if cfg.name not in SCHEDULES:
    raise ConfigError(f"schedule.name={cfg.name!r} is not a known schedule; "
                      f"expected one of {sorted(SCHEDULES)}")
  _validate(cfg, lr)
  schedule = SCHEDULES[cfg.name](lr, cfg, steps_per_epoch, num_steps)
  if cfg.warmup_steps:
    warmup = optax.linear_schedule(0.0, lr, cfg.warmup_steps)
    schedule = optax.join_schedules([warmup, schedule], [cfg.warmup_steps])
  return schedule


def _validate(cfg: ml_collections.ConfigDict, lr: float) -> None:
  if not 0 < cfg.gamma <= 1:
    raise ConfigError(f"schedule.gamma={cfg.gamma}: expected 0 < gamma <= 1")
  if cfg.name == "step" and cfg.step_size_epochs <= 0:
    raise ConfigError(f"schedule.step_size_epochs={cfg.step_size_epochs}: "
                      "expected a positive number of epochs")
  if cfg.name == "multistep" and (
      not cfg.milestones_epochs
      or list(cfg.milestones_epochs) != sorted(cfg.milestones_epochs)):
    raise ConfigError(f"schedule.milestones_epochs={cfg.milestones_epochs}: "
                      "expected increasing epochs, e.g. (30, 60)")
  if cfg.name.startswith("triangular"):
    if cfg.half_cycle_steps <= 0:
      raise ConfigError(f"schedule.half_cycle_steps={cfg.half_cycle_steps}: "
                        "expected a positive number of steps")
    if cfg.max_learning_rate <= lr:
      raise ConfigError(
          f"schedule.max_learning_rate={cfg.max_learning_rate}: expected more "
          f"than optimizer.learning_rate={lr}, the cycle's base")
  if cfg.warmup_steps < 0:
    raise ConfigError(f"schedule.warmup_steps={cfg.warmup_steps}: expected "
                      ">= 0")
