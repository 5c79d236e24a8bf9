"""Every logged scalar, kept in `workdir/history.jsonl` (see `writers`).

The plots are drawn from this file rather than from TensorBoard events so
they need no TensorFlow and survive resume: on restart, records after the
restored step are dropped, since training recomputes them identically.
"""
import json
import os

import numpy as np

FILENAME = "history.jsonl"


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
