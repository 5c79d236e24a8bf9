"""Task registry: `config.task.name` -> loss, metrics and output activation.

A task is built as `TaskClass(info=DataInfo, **config.task less name)` and
provides (all array code is traced inside the jitted steps):

  metrics_class        a CLU `metrics.Collection` over per-example outputs
  num_outputs          channels of the model's last layer
  per_example_metric   name of the per-example output that ranks examples
                       (higher is better: evaluate's worst are the lowest)
  inputs(batch)        model input from a batch {'image', 'label'[, 'mask']}
  loss_and_outputs(logits, batch) -> (scalar loss, per-example outputs);
                       outputs hold `mask` (0 = eval padding) and feed
                       `metrics_class.single_from_model_output(**outputs)`;
                       every output of shape [batch] is a column of
                       evaluate's per-example CSV
  predict(logits)      what a person looks at (probabilities, class ids)
  figures(batch, predictions, outputs, computed_metrics, plots_dir)
                       writes PNGs, returns {name: RGB array} for TensorBoard
  learning_curves(history_records, plots_dir)
  in_channels          optional: channels of inputs(batch) when they differ
                       from the dataset's (colorization feeds L of RGB)
  prepare(split, name) optional, host: the split with this task's targets
                       (and `Split.maps`) made from the dataset's labels,
                       once per split before anything trains
  object_scores(batch, predictions) -> [dict per real example]
  split_scores(rows) -> {name: float}
                       optional, host: scores computed from predictions
                       outside the jitted step (objects matched to objects);
                       every evaluation adds split_scores to the metrics and
                       evaluate's CSV gets the per-example scalars

Add a task: one module here and one line below.
"""
import inspect

import ml_collections

from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError
from unetjax.runtime.registry import Registry

TASKS = Registry("task", "task.name", {
    "binary_segmentation": "unetjax.tasks.segmentation:BinarySegmentation",
    "segmentation": "unetjax.tasks.multiclass:MulticlassSegmentation",
    "colorization": "unetjax.tasks.colorization:Colorization",
    "classification": "unetjax.tasks.classification:Classification",
    "instances": "unetjax.tasks.instances:InstanceSegmentation",
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
  if getattr(info, "instances", False) and not hasattr(task_cls,
                                                       "to_instances"):
    flag = config.data.get("instances") is True
    raise ConfigError(
        f"task.name={config.task.name!r} reads labels as class ids, but "
        + ("data.instances=True gives" if flag else
           f"dataset {info.name!r} gives")
        + " instance ids (1..n per object); use task.name='instances'"
        + (", or data.instances=False to read the masks as classes"
           if flag else ""))
  return task_cls(info=info, **kwargs)


def model_in_channels(task, info) -> int:
  """Channels the model takes: the task's own count, else the dataset's."""
  return getattr(task, "in_channels", info.in_channels)
