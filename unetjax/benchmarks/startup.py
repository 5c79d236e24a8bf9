"""Dead time at start and exit: `unetjax-benchmark --startup`.

  unetjax-benchmark --startup                  # configs/default.py
  unetjax-benchmark --startup --config isbi2012 --set data.dir=...

Runs `python -m unetjax.main` on the config in fresh processes, short
(`--steps` train steps, one evaluation at the end), each with a new,
empty compilation cache ("cold") and then again on that cache ("warm"),
`--repeats` times, and times the lines it prints as they arrive: process
start to the config being logged, to "Starting a new run", to the end of
the first train step (the trainer logs "First train step done." once it
finished), and from the last line printed to the process's exit.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

MARKS = {"config": "Config:", "new_run": "Starting a new run.",
         "first_step": "First train step done.",
         "done": "Done. Results in"}


def config_path(name: str) -> str:
  """A config file: a path, or a name under configs/."""
  from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
  path = name if name.endswith(".py") else os.path.join("configs",
                                                        f"{name}.py")
  if not os.path.exists(path):
    raise ConfigError(f"--config {name}: {path} does not exist; expected a "
                      "name under configs/ or a .py path")
  return path


def timed_lines(command: list[str], env: dict[str, str], cwd: str | None = None
                ) -> tuple[list[tuple[float, str]], float, int]:
  """(seconds since start, line) of all output, the exit time, the code."""
  started = time.perf_counter()
  process = subprocess.Popen(command, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, bufsize=1,
                             env=env, cwd=cwd)
  lines = [(time.perf_counter() - started, line.rstrip("\n"))
           for line in process.stdout]
  code = process.wait()
  return lines, time.perf_counter() - started, code


def marks(lines: list[tuple[float, str]], exit_s: float) -> dict[str, float]:
  """Seconds from process start to each mark, and last line to exit."""
  found = {}
  for seconds, line in lines:
    for name, text in MARKS.items():
      if f"{name}_s" not in found and text in line:
        found[f"{name}_s"] = seconds
  if lines:
    found["last_line_to_exit_s"] = exit_s - lines[-1][0]
  found["exit_s"] = exit_s
  return found


def run_once(config: str, cache_dir: str, steps: int,
             assignments: list[str]) -> dict[str, Any]:
  with tempfile.TemporaryDirectory() as workdir:
    env = dict(os.environ, XDG_CACHE_HOME=cache_dir, PYTHONUNBUFFERED="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    lines, exit_s, code = timed_lines(
        [sys.executable, "-m", "unetjax.main", "--config", config,
         "--workdir", os.path.join(workdir, "run"),
         f"--config.num_steps={steps}", f"--config.eval_every_steps={steps}",
         f"--config.log_every_steps={steps}",
         # the full log, where the marks are (the default terminal is terse)
         "--verbosity=0",
         *[f"--config.{a}" for a in assignments]], env)
  if code:
    return dict(error=(lines[-1][1] if lines else f"exit code {code}"))
  result = marks(lines, exit_s)
  missing = [name for name in MARKS if f"{name}_s" not in result]
  if missing:
    result["error"] = f"no {', '.join(missing)} line in the output"
  return result


def run(config_name: str, *, repeats: int, steps: int,
        assignments: list[str]) -> dict[str, Any]:
  """Cold then warm runs on a new cache each repeat."""
  config = config_path(config_name)
  runs = {"cold": [], "warm": []}
  for _ in range(repeats):
    with tempfile.TemporaryDirectory() as cache:
      for kind in runs:
        runs[kind].append(run_once(config, cache, steps, assignments))
  return dict(config=config, steps=steps, repeats=repeats, runs=runs,
              summary=summarize(runs))


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
  summary = {}
  for kind, results in runs.items():
    good = [r for r in results if "error" not in r]
    keys = [k for k in (good[0] if good else {}) if k.endswith("_s")]
    summary[kind] = {k: statistics.median(r[k] for r in good) for k in keys}
  return summary


def table(result: dict[str, Any]) -> str:
  from unetjax.benchmarks import common  # pylint: disable=g-import-not-at-top
  machine = common.machine()
  lines = [f"{result['config']}, {result['steps']} steps, median of "
           f"{result['repeats']}, {machine['cpu']}, {machine['cores']} cores",
           f"{'cache':<6}{'config':>8}{'new run':>9}{'1st step':>10}"
           f"{'Done.':>8}{'exit':>8}{'last line->exit':>17}"]
  for kind, row in result["summary"].items():
    if row:
      lines.append(f"{kind:<6}" + "".join(
          f"{row.get(k, float('nan')):{w}.1f}" for k, w in (
              ("config_s", 8), ("new_run_s", 9), ("first_step_s", 10),
              ("done_s", 8), ("exit_s", 8), ("last_line_to_exit_s", 17))))
    for r in result["runs"][kind]:
      if "error" in r:
        lines.append(f"{kind:<6}error: {r['error']}")
  return "\n".join(lines)


def main(args) -> dict:
  """`unetjax-benchmark --startup` with `benchmark.parse_args`'s args."""
  import json  # pylint: disable=g-import-not-at-top
  config = "default" if args.config == "reference" else args.config
  result = run(config, repeats=args.repeats, steps=args.steps,
               assignments=args.set)
  print(table(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result
