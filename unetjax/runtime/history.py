"""Every logged scalar, kept in `workdir/history.jsonl` (see `writers`).

The plots are drawn from this file rather than from TensorBoard events so
they need no TensorFlow and survive resume: on restart, records after the
restored step are dropped, since training recomputes them identically.
"""
import json
import os

import numpy as np

from unetjax.runtime.errors import WorkdirError

FILENAME = "history.jsonl"


def read(workdir: str) -> list[dict[str, float]]:
  """The records; a line cut short by a crash (the last) is skipped, any
  other line that is not a JSON object with a numeric `step` is an error."""
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    return []
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError as e:
    raise WorkdirError(f"{path} is not UTF-8 text (byte {e.start}); expected "
                       "one JSON object per line") from e
  except OSError as e:
    raise WorkdirError(f"{path} cannot be read: {e.strerror}") from e
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if number == len(lines):  # a line cut short by a crash
        continue
      raise WorkdirError(f"{path} line {number} is not JSON; expected one "
                         "object per line") from None
    if not isinstance(record, dict):
      raise WorkdirError(f"{path} line {number} holds a JSON "
                         f"{type(record).__name__}; expected an object")
    if "step" not in record:
      raise WorkdirError(f"{path} line {number} has no 'step'")
    for key, value in record.items():
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkdirError(f"{path} line {number}: {key}={value!r}; expected "
                           "a number")
    records.append(record)
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
