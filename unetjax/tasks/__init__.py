"""Task registry: `config.task.name` -> loss, metrics and output activation.

A task turns a batch into model inputs, model logits into a loss and
per-example metric outputs, and logits into predictions people look at.
It is built from `config.task` (its keyword arguments) and the dataset's
`DataInfo`. Add a task: one module here and one line below.
"""
import inspect

import ml_collections

from unetjax import config as config_lib
from unetjax.errors import ConfigError
from unetjax.registry import Registry

TASKS = Registry("task", "task.name", {
    "binary_segmentation": "unetjax.tasks.segmentation:BinarySegmentation",
})


def build(config: ml_collections.ConfigDict, info):
  task_cls = TASKS.get(config.task.name)
  kwargs = config_lib.section_kwargs(config.task)
  accepted = set(inspect.signature(task_cls.__init__).parameters) - {
      "self", "info"}
  for key in kwargs:
    if key not in accepted:
      raise ConfigError(f"task.{key} is not an option of task "
                        f"{config.task.name!r}; expected one of "
                        f"{sorted(accepted)}")
  return task_cls(info=info, **kwargs)
