"""`benchmark --startup`: marks found in timed output lines."""
import sys

import pytest

from unetjax import startup_benchmark as sb
from unetjax.errors import ConfigError


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
