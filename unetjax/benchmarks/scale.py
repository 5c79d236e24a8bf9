"""Memory and speed against the size of the data set: `unetjax-benchmark
--scale`.

  unetjax-benchmark --scale --set data.dir=../shared/data/dsb2018 \\
      --steps 20 --scale-factors 1,10

For each factor N a DSB-layout set N times the size of `data.dir` is made
under `--scale-root` (`make_scaled`: every image folder N times under new
ids, each a symbolic link to the original folder, so it costs no disk;
the stored-example cache is keyed by the files' real paths, so the copies
share it too), and a fresh process builds the config's experiment on it,
trains `--steps` steps through the real input pipeline after the first
(compiled) one, and evaluates the first `--scale-eval` validation images
of the original set (the same images for every N, so the evaluation
costs the same whatever N). It
reports peak RSS (VmHWM: the process's high-water mark, file-backed pages
included) and training steps/s. With data streamed from disk the peak
should not grow with N; held in memory it grew with the number of images
times the largest image.
"""
import json
import os
import statistics
import time
from typing import Any

DEFAULT_CONFIG = "dsb2018"


def make_scaled(source: str, out: str, times: int) -> int:
  """Makes `out/stage1_train/` with each image folder of the DSB-layout
  `source` `times` times (ids `<id>` and `<id>_x<k>`), each a symbolic
  link to the original folder (the id is the link's name); returns the
  number of image folders. Idempotent."""
  from unetjax.data import dsb2018  # pylint: disable=g-import-not-at-top
  if times < 1:
    raise ValueError(f"times={times}: expected >= 1")
  examples = dsb2018.find_examples(source)
  root = os.path.join(out, "stage1_train")
  os.makedirs(root, exist_ok=True)
  for image_id, (image_path, _) in examples.items():
    folder = os.path.dirname(os.path.dirname(os.path.abspath(image_path)))
    for k in range(times):
      link = os.path.join(root, image_id if k == 0 else f"{image_id}_x{k}")
      if not os.path.lexists(link):
        os.symlink(folder, link)
  return len(examples) * times


def vm_hwm_bytes() -> int:
  """This process's peak resident set (VmHWM of /proc/self/status)."""
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  return 0


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
  """One fresh process: build, `steps` timed train steps, one evaluation."""
  import jax  # pylint: disable=g-import-not-at-top

  from unetjax.benchmarks import common  # pylint: disable=g-import-not-at-top
  from unetjax.data import input_pipeline, normalize  # pylint: disable=g-import-not-at-top
  from unetjax.training import evaluation, parallel  # pylint: disable=g-import-not-at-top
  from unetjax.training import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from unetjax.training import health as health_lib  # pylint: disable=g-import-not-at-top
  from unetjax.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  started = time.perf_counter()
  config = common.load_config(spec["config"])
  common.override(config, list(spec["assignments"]) + [
      f"data.dir={spec['dir']}"])
  experiment = experiment_lib.build_experiment(config)
  build_s = time.perf_counter() - started
  rss_built = vm_hwm_bytes()
  steps_fns = steps_lib.jit_steps(experiment)
  sharding = parallel.data_sharding(experiment.mesh)
  split = experiment_lib.train_split(config, experiment.dataset)
  batches = input_pipeline.train_batches(
      split, batch_size=config.batch_size, seed=config.seed, start_step=0,
      augment_config=config.augment, normalization=normalize.setting(config))
  replicated = parallel.replicated(experiment.mesh)
  state = experiment.state
  metrics = jax.device_put(experiment.task.metrics_class.empty(), replicated)
  health = jax.device_put(health_lib.initial_health(), replicated)
  times = []
  for step in range(spec["steps"] + 1):
    step_start = time.perf_counter()
    state, metrics, health = jax.block_until_ready(steps_fns.train(
        state, metrics, health, parallel.global_batch(next(batches),
                                                      sharding)))
    if step:  # the first compiles
      times.append(time.perf_counter() - step_start)
  rss_trained = vm_hwm_bytes()
  val = _eval_split(config, experiment.task, spec)
  eval_start = time.perf_counter()
  evaluation.evaluate(experiment, steps_fns, state, val)
  return dict(
      factor=spec["factor"], train_examples=len(split),
      val_examples=len(experiment.dataset.split("val")),
      build_s=build_s, steps=len(times),
      steps_per_s=1 / statistics.median(times),
      mean_steps_per_s=len(times) / sum(times),
      eval_s=time.perf_counter() - eval_start, eval_examples=len(val),
      peak_rss_after_build_bytes=rss_built,
      peak_rss_after_train_bytes=rss_trained, peak_rss_bytes=vm_hwm_bytes())


def _eval_split(config, task, spec):
  """The first validation examples of the original (N = 1) set: the same
  images for every N (their stored files are shared), so the evaluation's
  memory, which grows with the largest image evaluated, is held fixed."""
  from unetjax import data as datasets  # pylint: disable=g-import-not-at-top
  original = config.copy_and_resolve_references()
  original.data.dir = spec["source"]
  dataset = datasets.build(original)
  if hasattr(task, "prepare"):
    dataset = dataset.transformed(task.prepare)
  return dataset.split("val").take(spec["eval_examples"])


def main(args) -> None:
  """Builds each scaled set, measures each in a fresh process, prints a
  table (and writes --json)."""
  from unetjax.benchmarks import common  # pylint: disable=g-import-not-at-top
  config = DEFAULT_CONFIG if args.config == common.REFERENCE else args.config
  source = _data_dir(args.set)
  factors = [int(f) for f in args.scale_factors.split(",")]
  rows = []
  for factor in factors:
    out = os.path.join(args.scale_root, f"x{factor}")
    make_scaled(source, out, factor)
    assignments = [a for a in args.set if not a.startswith("data.dir=")]
    spec = dict(config=config, dir=out, source=source, factor=factor,
                steps=args.steps,
                eval_examples=args.scale_eval, assignments=assignments)
    row = common.run_worker(["scale", "--spec", json.dumps(spec)])
    rows.append({"factor": factor, **row})
    print(json.dumps(rows[-1]), flush=True)
  print(table(rows))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"machine": common.machine(), "rows": rows}, f, indent=2)


def _data_dir(assignments) -> str:
  for assignment in assignments:
    if assignment.startswith("data.dir="):
      return assignment.split("=", 1)[1]
  raise SystemExit("--scale needs --set data.dir=<the DSB 2018 folder>")


def table(rows) -> str:
  lines = ["| N | train examples | steps/s (median) | peak RSS GiB | "
           "after build | after train | build s | eval s |",
           "|---|---|---|---|---|---|---|---|"]
  for row in rows:
    if "error" in row:
      lines.append(f"| {row['factor']} | error: {row['error']} |")
      continue
    gib = 2 ** 30
    lines.append(
        f"| {row['factor']} | {row['train_examples']} | "
        f"{row['steps_per_s']:.3f} | {row['peak_rss_bytes'] / gib:.2f} | "
        f"{row['peak_rss_after_build_bytes'] / gib:.2f} | "
        f"{row['peak_rss_after_train_bytes'] / gib:.2f} | "
        f"{row['build_s']:.0f} | {row['eval_s']:.0f} |")
  return "\n".join(lines)
