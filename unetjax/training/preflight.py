"""Checks of a config that need no data: what a sweep runs on every trial
before the first one starts, and what training adds before its first
write once the data is read.

`check_config` builds what can be built without reading a file: the
config's own ranges (`config.validate`), the option names of the dataset
and model, the task with its options (on a stand-in of the dataset's
facts: the instance task on instance labels, other tasks on what
`data.instances` says) and the optimizer, and augmentation
settings that do not depend on the image size. What depends on the data
(files, image sizes, label values) is checked by `check_data` and the
loaders, still before the first write.
"""
import inspect

import ml_collections

from unetjax import data as datasets
from unetjax import tasks
from unetjax.data import input_pipeline
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for anything wrong that needs no data."""
  config_lib.validate(config)
  builder = datasets.DATASETS.get(config.data.name)
  accepted = set(inspect.signature(builder).parameters)
  for key in config_lib.section_kwargs(config.data):
    if key not in accepted:
      raise ConfigError(f"data.{key} is not an option of dataset "
                        f"{config.data.name!r}; expected one of "
                        f"{sorted(accepted)}")
  task_name = config.task.name
  instances = task_name == "instances" or config.data.get("instances") is True
  num_classes = config.data.get("num_classes", 2)
  names = tuple(f"class_{i}" for i in range(num_classes)) if isinstance(
      num_classes, int) and num_classes > 0 else ()
  info = datasets.DataInfo(config.data.name, len(names) or 2,
                           config.data.get("channels", 1) or 1,
                           names or ("background", "object"), instances)
  try:
    tasks.build(config, info)
  except ConfigError as e:
    text = str(e)
    if (text.startswith("task.") and not text.startswith("task.name=")
        or "data.instances=True gives" in text):
      raise  # an option of the task itself, not of the stand-in facts
  from unetjax.training import optimizers  # pylint: disable=g-import-not-at-top
  # The schedule's checks need the epoch length, which needs the data.
  optimizers.build(config, lambda step: config.optimizer.learning_rate)
  from unetjax.data import augment  # pylint: disable=g-import-not-at-top
  size = config.augment.crop_size if config.augment.crop_size > 0 else 1 << 30
  augment.validate(config.augment, size, size)


def check_data(config: ml_collections.ConfigDict,
               train: datasets.Split) -> None:
  """What depends on the training split, before the first write: images
  of varied sizes train on crops that fit the smallest."""
  input_pipeline.check_crop(train, config.augment.crop_size)
