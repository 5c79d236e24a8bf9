"""The shared part of every experiment config, and its validation.

Experiment files under `configs/` start from `base_config()` and fill in the
model, data and task sections, big_vision style: the config is code, every
key exists before the command line overrides it, so a misspelt
`--config.x=y` fails instead of being ignored.
"""
import json
import math
import os
import sys
from typing import Any

import ml_collections

from unetjax.runtime.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
  """Defaults for everything but the model, data and task sections."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Filled in by each experiment: `name` picks the registry entry, the other
  # keys are that entry's keyword arguments.
  config.model = ml_collections.ConfigDict({"name": ""})
  # data.train_examples=N trains on the first N training examples only.
  config.data = ml_collections.ConfigDict({"name": "", "train_examples": 0})
  config.task = ml_collections.ConfigDict({"name": ""})

  config.optimizer = ml_collections.ConfigDict(dict(
      name="adam",
      learning_rate=1e-3,
      momentum=0.9,  # sgd only; 0 gives plain SGD
      nesterov=False,  # sgd only
      weight_decay=0.0,  # adamw decoupled decay, sgd L2 penalty
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip_norm=0.0,  # 0 disables clipping
  ))
  config.schedule = ml_collections.ConfigDict(dict(
      name="constant",
      gamma=0.1,  # step / multistep decay factor
      step_size_epochs=1,  # step decay period, like torch's StepLR
      milestones_epochs=(),  # multistep, like torch's MultiStepLR
      max_learning_rate=1e-2,  # cyclical: optimizer.learning_rate is the base
      half_cycle_steps=2000,  # cyclical: steps from base to max
      warmup_steps=0,  # linear warm-up in front of any schedule
      alpha=0.0,  # cosine: final learning rate as a fraction of the start
  ))
  config.augment = ml_collections.ConfigDict(dict(
      crop_size=0,  # random square crops of this size; 0 keeps the image
      flip=False,  # random horizontal and vertical flips
      rot90=False,  # random multiples of 90 degrees
      brightness=0.0,  # max additive change, images are in [0, 1]
      contrast=0.0,  # max relative change of contrast
      elastic=False,  # U-Net paper's elastic deformation (masks: nearest)
      elastic_grid=3,  # displacements drawn on a grid x grid lattice
      elastic_sigma=10.0,  # their standard deviation, in pixels
  ))

  config.batch_size = 16  # global, over all devices and processes
  config.eval_batch_size = 32
  # Train for num_steps, or for num_epochs when num_steps is 0.
  config.num_steps = 1000
  config.num_epochs = 0
  config.log_every_steps = 50
  config.eval_every_steps = 250  # also when checkpoints are written
  config.keep_checkpoints = 2  # latest N, plus the best one
  config.best_metric = "val/loss"
  config.best_mode = "min"
  config.num_sample_images = 6
  # A non-finite loss, gradient or parameter stops training (DivergenceError)
  # unless this is True: then that step's update is skipped and counted.
  config.skip_nonfinite_updates = False
  config.dtype = "float32"  # compute dtype; bfloat16 on GPU/TPU
  config.param_dtype = "float32"
  return config


_POSITIVE_INTS = ("batch_size", "eval_batch_size", "log_every_steps",
                  "eval_every_steps", "keep_checkpoints")
_DTYPES = ("float32", "bfloat16", "float16")


def make_siblings_importable(config_path: str) -> None:
  """Lets a config file `from configs import other` from any directory.

  Experiment variants build on a sibling config; that import resolves
  against the folder holding `configs/`, which need not be the cwd.
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(config_path)))
  if root not in sys.path:
    sys.path.insert(0, root)


def _number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _integer(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


# (key, test, what is expected) for the keys of base_config() beyond those
# `validate` checks itself.
_RANGES = (
    ("seed", _integer, "an integer"),
    ("optimizer.learning_rate", lambda v: _number(v) and v > 0,
     "a finite number > 0"),
    ("optimizer.b1", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("optimizer.b2", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("optimizer.eps", lambda v: _number(v) and v > 0, "a finite number > 0"),
    ("optimizer.momentum", lambda v: _number(v) and 0 <= v < 1,
     "a number in [0, 1)"),
    ("optimizer.weight_decay", lambda v: _number(v) and v >= 0,
     "a finite number >= 0"),
    ("optimizer.grad_clip_norm", lambda v: _number(v) and v >= 0,
     "a finite number >= 0 (0 disables clipping)"),
    ("schedule.max_learning_rate", lambda v: _number(v) and v > 0,
     "a finite number > 0"),
    ("schedule.warmup_steps", lambda v: _integer(v) and v >= 0,
     "an integer >= 0"),
    ("schedule.alpha", lambda v: _number(v) and 0 <= v <= 1,
     "a number in [0, 1]"),
    ("augment.crop_size", lambda v: _integer(v) and v >= 0,
     "a crop size in pixels, an integer >= 0 (0: no crop)"),
    ("num_sample_images", lambda v: _integer(v) and v >= 0,
     "an integer >= 0"),
)


def check_keys(config: ml_collections.ConfigDict) -> None:
  """Every key of base_config() the trainer reads must be in the config:
  a config file built without base_config() names what it lacks."""
  have = flat_items(config.to_dict())
  missing = [key for key in flat_items(base_config().to_dict())
             if key not in have]
  if missing:
    raise ConfigError(
        f"the config has no key {missing[0]!r}"
        f"{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
        "build it on unetjax.runtime.config.base_config(), which has them all")


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects values that would fail late or silently train something else."""
  check_keys(config)
  for key in _POSITIVE_INTS:
    _check(config, key, lambda v: isinstance(v, int) and v > 0,
           "a positive integer")
  _check(config, "num_steps", lambda v: isinstance(v, int) and v >= 0,
         "an integer >= 0")
  _check(config, "num_epochs", lambda v: isinstance(v, int) and v >= 0,
         "an integer >= 0")
  if config.num_steps == 0 and config.num_epochs == 0:
    raise ConfigError("num_steps and num_epochs are both 0; set one of them")
  for key, ok, expected in _RANGES:
    _check(config, key, ok, expected)
  _check(config, "best_mode", lambda v: v in ("min", "max"), "'min' or 'max'")
  _check(config, "skip_nonfinite_updates", lambda v: isinstance(v, bool),
         "True or False")
  _check(config, "dtype", lambda v: v in _DTYPES, f"one of {_DTYPES}")
  _check(config, "param_dtype", lambda v: v in _DTYPES, f"one of {_DTYPES}")
  for section in ("model", "data", "task"):
    _check(config, f"{section}.name", lambda v: isinstance(v, str) and v,
           "a registered name")
  _check(config, "data.train_examples", lambda v: isinstance(v, int) and v >= 0,
         "an integer >= 0 (0 uses every training example)")
  if (not isinstance(config.best_metric, str)
      or config.best_metric.split("/")[0] not in ("train", "val")):
    raise ConfigError(f"best_metric={config.best_metric!r}: expected "
                      "'val/<metric>' or 'train/<metric>'")


def _check(config, key: str, ok, expected: str) -> None:
  value = lookup(config, key)
  try:
    good = ok(value)
  except TypeError:
    good = False
  if not good:
    raise ConfigError(f"config.{key}={value!r}: expected {expected}")


def lookup(config: ml_collections.ConfigDict, dotted_key: str) -> Any:
  value = config
  for part in dotted_key.split("."):
    value = value[part]
  return value


# Keys of a registry section that the trainer reads, not the registry entry.
TRAINER_KEYS = ("name", "train_examples", "normalize", "percentiles")


def section_kwargs(section: ml_collections.ConfigDict) -> dict[str, Any]:
  """A registry section's keyword arguments: all but the trainer's keys."""
  return {k: v for k, v in section.to_dict().items()
          if k not in TRAINER_KEYS}


def to_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def load_saved(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with, as saved in its config.json."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"{path} does not exist: is {workdir!r} a workdir?")
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} is unreadable: {' '.join(str(e).split())}"
                      ) from e
  if not isinstance(saved, dict):
    raise ConfigError(f"{path} holds a JSON {type(saved).__name__}, not the "
                      "object of a saved config")
  return ml_collections.ConfigDict(saved)


def flat_items(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}: what a config diff is reported in."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flat_items(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
  return flat
