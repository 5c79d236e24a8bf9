"""A CLU metric writer that keeps every scalar in `workdir/history.jsonl`.

The plots are drawn from this file rather than from TensorBoard events so
they need no TensorFlow and survive resume: on restart, records after the
restored step are dropped, since training recomputes them identically.
"""
import json
import os
from typing import Any, Mapping

import numpy as np
from clu.metric_writers import interface

FILENAME = "history.jsonl"


class JsonlWriter(interface.MetricWriter):
  """Appends {"step": s, "name": value, ...} lines; ignores non-scalars."""

  def __init__(self, workdir: str):
    self._path = os.path.join(workdir, FILENAME)
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


def read(workdir: str) -> list[dict[str, float]]:
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut short by a crash
        continue
  return records


def truncate_after(workdir: str, step: int) -> None:
  """Drops records logged after `step`, the step training resumes from."""
  records = [r for r in read(workdir) if r["step"] <= step]
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  os.replace(tmp, path)


def series(records: list[dict[str, float]],
           name: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of one scalar, in step order."""
  points = sorted((r["step"], r[name]) for r in records if name in r)
  if not points:
    return np.zeros(0), np.zeros(0)
  steps, values = zip(*points)
  return np.asarray(steps), np.asarray(values)
