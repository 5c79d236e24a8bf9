"""The run's metric writers: TensorBoard and logs (CLU), plus history.jsonl.

Kept apart from `train` because CLU's writers import TensorFlow: training
loads them when it starts writing, while building, benchmarking and stepping
a model (on a GPU machine without TensorFlow, say) do not need them.
Importing this module hides the GPUs from TensorFlow first: the TensorBoard
writer starts TensorFlow's runtime, which would otherwise take GPU memory
from JAX, and after which the GPUs can no longer be hidden.
"""
import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from unetjax.runtime import history, imports
from unetjax.runtime.imports import tensorflow

tensorflow()  # the GPUs hidden from TensorFlow before CLU's writer imports it
# TensorBoard's hparams plugin, which CLU's writer imports, subclasses a
# `tf.keras` class, so Keras is imported here; what Keras then imports only
# for its scikit-learn wrappers and its image-gallery plot is not:
# scikit-learn (about 1 s) and pyplot (0.3-0.4 s, loaded by `plots` when
# the first evaluation draws).
with imports.hidden("sklearn", "matplotlib.pyplot"):
  # pylint: disable=g-import-not-at-top,wrong-import-position
  from clu import metric_writers, periodic_actions
  from clu.metric_writers import interface
  # pylint: enable=g-import-not-at-top,wrong-import-position


def create(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard events and logging; process 0 also keeps history.jsonl."""
  main = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if jax.process_index() > 0:
    return main
  return metric_writers.MultiWriter([main, JsonlWriter(workdir)])


def progress_report(num_steps: int, writer: metric_writers.MetricWriter,
                    every_steps: int) -> periodic_actions.ReportProgress:
  """Steps/s and time left, written every `every_steps` steps."""
  return periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=every_steps)


class JsonlWriter(interface.MetricWriter):
  """Appends {"step": s, "name": value, ...} lines; ignores non-scalars."""

  def __init__(self, workdir: str):
    self._path = os.path.join(workdir, history.FILENAME)
    self._file = open(self._path, "a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {"step": int(step)}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + "\n")

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self.flush()
    self._file.close()
