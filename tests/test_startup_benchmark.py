"""`benchmark --startup`: marks found in timed output lines."""
import sys

import pytest

from unetjax.benchmarks import startup as sb
from unetjax.runtime.errors import ConfigError


def test_marks_are_the_first_matching_lines_and_the_exit_gap():
  lines = [(1.0, "I... Config:"), (2.5, "Starting a new run."),
           (4.0, "First train step done."), (5.0, "First train step done."),
           (9.0, "Done. Results in /tmp/x"), (9.5, "Final val metrics: ...")]
  found = sb.marks(lines, exit_s=12.0)
  assert found == dict(config_s=1.0, new_run_s=2.5, first_step_s=4.0,
                       done_s=9.0, last_line_to_exit_s=2.5, exit_s=12.0)


def test_timed_lines_sees_each_line_and_the_exit_code():
  script = ("import sys; print('Config:'); print('Starting a new run.', "
            "file=sys.stderr); sys.exit(3)")
  lines, exit_s, code = sb.timed_lines([sys.executable, "-c", script],
                                       {"PYTHONUNBUFFERED": "1"})
  assert [line for _, line in lines] == ["Config:", "Starting a new run."]
  assert code == 3 and lines[0][0] <= lines[1][0] <= exit_s


def test_summary_is_the_median_of_good_runs():
  runs = {"cold": [dict(first_step_s=x, exit_s=2 * x) for x in (3, 1, 2)],
          "warm": [dict(error="no first_step line")]}
  assert sb.summarize(runs) == {"cold": dict(first_step_s=2, exit_s=4),
                                "warm": {}}


def test_unknown_config_is_a_config_error():
  with pytest.raises(ConfigError, match="no_such_config"):
    sb.config_path("no_such_config")


def test_a_run_ends_at_once_with_every_file_complete(tmp_path):
  """main ends the process with os._exit after its last line: the files
  the trainer wrote must all be there, flushed and closed, first."""
  import fcntl  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  from conftest import REPO  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "wd"
  overrides = [f"--config.{k}" for k in (
      "model.depth=2", "model.features=4", "data.image_size=16",
      "data.num_train=8", "data.num_val=4", "data.num_test=4",
      "batch_size=4", "eval_batch_size=4", "num_steps=4",
      "eval_every_steps=4", "log_every_steps=2", "num_sample_images=1")]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  lines, exit_s, code = sb.timed_lines(
      [sys.executable, "-m", "unetjax.main", "--config", "configs/cells.py",
       "--workdir", str(workdir), "--verbosity=0", *overrides], env, cwd=REPO)
  assert code == 0, lines[-5:]
  found = sb.marks(lines, exit_s)
  assert {"config_s", "new_run_s", "first_step_s", "done_s"} <= set(found)
  # the last lines: the val metrics, then the test split's
  assert lines[-2][1].startswith("Final val metrics")
  assert lines[-1][1].startswith("Final test metrics")
  assert json.loads((workdir / "metrics.json").read_text())["step"] == 4
  history = [json.loads(line) for line in
             (workdir / "history.jsonl").read_text().splitlines()]
  assert [r["step"] for r in history if "train/loss" in r] == [2, 4]
  assert any(r["step"] == 4 and "val/loss" in r for r in history)
  events = [p for p in os.listdir(workdir) if p.startswith("events.out")]
  assert events and (workdir / events[0]).stat().st_size > 0
  assert "4" in os.listdir(workdir / "checkpoints")
  with open(workdir / ".lock", "a+") as handle:  # released
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
