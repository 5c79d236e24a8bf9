"""The training benchmark: the package's own train step on a config's real
input pipeline, beside the same U-Net written in PyTorch, each in fresh
processes, alternating (`unetjax-benchmark`, no mode flag)."""
import itertools
import json
import os
import statistics
import time
from typing import Any

from unetjax.benchmarks import torch_unet
from unetjax.benchmarks.common import (
  jax_matmul_peak,
  load_config,
  machine,
  override,
  peak_rss_bytes,
  run_worker,
  warm_median_seconds,
)

PIPELINE, FIXED = "pipeline", "fixed"


def fixed_batch(split, batch_size: int, crop_size: int) -> dict[str, Any]:
  """The first `batch_size` training examples as the pipeline would give
  them, without augmentation: the same shapes and value ranges."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if len(split) < batch_size:
    raise ConfigError(f"--input {FIXED} needs {batch_size} training examples"
                      f"; this split has {len(split)}")
  # Read one by one (a stored split streams from disk), cropped to the
  # top-left crop_size square as the pipeline's crops are that size.
  side = crop_size or None
  examples = [split.read(i, 0, 0, side, side) for i in range(batch_size)]
  shapes = {e["image"].shape for e in examples}
  if len(shapes) > 1:
    raise ConfigError(f"--input {FIXED} needs {batch_size} training examples "
                      f"of one size (or augment.crop_size); the first ones "
                      f"are of varying sizes {sorted(shapes)[:3]}")
  images = np.stack([e["image"] for e in examples])
  images = (images / np.float32(255) if images.dtype == np.uint8
            else images.astype(np.float32))
  labels = np.stack([e["label"] for e in examples])
  return {"image": images, "label": labels}


def run_jax(config_name: str, steps: int, batch_size: int,
            dtype: str = "", assignments: tuple[str, ...] = (),
            input_mode: str = PIPELINE) -> dict[str, Any]:
  """One fresh process's measurements of the package's own train step."""
  import jax  # pylint: disable=g-import-not-at-top

  from unetjax.training import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed()
  rss_at_start = peak_rss_bytes()
  started = time.perf_counter()
  run = _JaxRun(config_name, batch_size, dtype, assignments, input_mode)
  build_s = time.perf_counter() - started
  compile_start = time.perf_counter()
  compiled = run.compile()
  compile_s = time.perf_counter() - compile_start
  run.step()
  first_step_s = time.perf_counter() - started
  step_times, waits = run.timed_steps(steps)
  step_s = statistics.median(step_times)
  train_rss = peak_rss_bytes()
  device_peak = _device_peak_bytes(jax.devices()[0])
  config, experiment, image = run.config, run.experiment, run.batch["image"]
  model_flops = analytic_train_flops(experiment, image)
  result = dict(
      framework="jax", config=config_name, device=str(jax.devices()[0]),
      dtype=config.dtype, xla_flags=os.environ.get("XLA_FLAGS", ""),
      batch_size=config.batch_size, input_shape=list(image.shape[1:]),
      num_params=experiment.num_params, build_s=build_s, compile_s=compile_s,
      time_to_first_step_s=first_step_s,
      step_s=step_s, images_per_s=config.batch_size / step_s,
      input_wait_fraction=sum(waits) / sum(step_times),
      flops_per_step=compiled.cost_analysis()["flops"],
      analytic_flops_per_step=model_flops,
      gflops_per_s=model_flops / step_s / 1e9,
      matmul_peak_gflops=jax_matmul_peak(config.dtype), input=input_mode,
      eval_images_per_s=_inference_throughput(
          run.steps.eval, run.state, run.batch, config.batch_size),
      predict_images_per_s=_inference_throughput(
          run.steps.predict, run.state, run.batch, config.batch_size),
      rss_at_start_bytes=rss_at_start, train_peak_rss_bytes=train_rss,
      peak_rss_bytes=peak_rss_bytes(),
      step_buffers_bytes=_buffer_bytes(compiled.memory_analysis()),
      torch_spec=torch_unet.torch_spec(config, experiment, image.shape))
  if device_peak is not None:
    result["device_peak_bytes"] = device_peak
  if input_mode == PIPELINE:
    result["input_images_per_s"] = input_throughput(run.batches(),
                                                    config.batch_size)
  return result


class _JaxRun:
  """The experiment of a config as `unetjax-train` builds it, its jitted
  steps, its input stream and the loop's state, stepped by hand."""

  def __init__(self, config_name: str, batch_size: int, dtype: str,
               assignments, input_mode: str):
    import jax  # pylint: disable=g-import-not-at-top

    from unetjax.training import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
    from unetjax.training import health as health_lib  # pylint: disable=g-import-not-at-top
    from unetjax.training import parallel  # pylint: disable=g-import-not-at-top
    from unetjax.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
    config = load_config(config_name)
    if batch_size:
      config.batch_size = config.eval_batch_size = batch_size
    if dtype:
      config.dtype = dtype
    override(config, list(assignments))
    self.config, self.input_mode = config, input_mode
    self.experiment = experiment_lib.build_experiment(config)
    self.steps = steps_lib.jit_steps(self.experiment)
    self.sharding = parallel.data_sharding(self.experiment.mesh)
    self.split = experiment_lib.train_split(config, self.experiment.dataset)
    self.stream = (itertools.repeat(fixed_batch(
        self.split, config.batch_size, config.augment.crop_size))
                   if input_mode == FIXED else self.batches())
    replicated = parallel.replicated(self.experiment.mesh)
    self.state = self.experiment.state
    self.metrics = jax.device_put(
        self.experiment.task.metrics_class.empty(), replicated)
    self.health = jax.device_put(health_lib.initial_health(), replicated)
    self.batch = self.next_batch()

  def batches(self):
    from unetjax.data import (
      input_pipeline,  # pylint: disable=g-import-not-at-top
      normalize,  # pylint: disable=g-import-not-at-top
    )
    config = self.config
    return input_pipeline.train_batches(
        self.split, batch_size=config.batch_size, seed=config.seed,
        start_step=0, augment_config=config.augment,
        normalization=normalize.setting(config))

  def next_batch(self):
    from unetjax.training import parallel  # pylint: disable=g-import-not-at-top
    return parallel.global_batch(next(self.stream), self.sharding)

  def compile(self):
    from unetjax.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
    return steps_lib.compile_ahead(self.steps.train, self.state, self.metrics,
                                   self.health, self.batch)

  def step(self) -> None:
    import jax  # pylint: disable=g-import-not-at-top
    self.state, self.metrics, self.health = jax.block_until_ready(
        self.steps.train(self.state, self.metrics, self.health, self.batch))

  def timed_steps(self, steps: int) -> tuple[list[float], list[float]]:
    """Each step's seconds and the part of it spent waiting for input."""
    step_times, waits = [], []
    for _ in range(steps):
      start = time.perf_counter()
      if self.input_mode != FIXED:  # a fixed batch stays on the device
        self.batch = self.next_batch()
      waits.append(time.perf_counter() - start)
      self.step()
      step_times.append(time.perf_counter() - start)
    return step_times, waits


def _inference_throughput(step, state, batch, batch_size: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  seconds = warm_median_seconds(
      lambda: jax.block_until_ready(step(state, batch)), 3)
  return batch_size / seconds


def input_throughput(stream, batch_size: int, num_batches: int = 20) -> float:
  """Images/s of the input pipeline alone, after its first batch."""
  next(stream)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(stream)
  return num_batches * batch_size / (time.perf_counter() - start)


def _device_peak_bytes(device) -> int | None:
  """Peak bytes in use on the device (compile-time autotuning included),
  where the device reports it (GPUs do, the CPU does not)."""
  stats = device.memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  return None


def _buffer_bytes(memory) -> int:
  """XLA's size of the compiled step's arguments, outputs and temporaries,
  donated arguments counted once."""
  return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
             + memory.temp_size_in_bytes - memory.alias_size_in_bytes)


def analytic_train_flops(experiment, images) -> float:
  """3x the forward convolution and matmul FLOPs (forward, both gradients).

  Counted from the traced forward pass; the input gradient of the first
  layer, which a train step skips, is included, so this is a slight
  over-count of what the step must compute.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  model, _ = nnx.merge(experiment.graphdef, experiment.state)
  model.eval()
  jaxpr = jax.make_jaxpr(lambda x: model(x))(images)  # pylint: disable=unnecessary-lambda
  return 3.0 * jaxpr_flops(jaxpr.jaxpr)


def jaxpr_flops(jaxpr) -> float:
  """Multiply-add FLOPs (2 per MAC) of the convs and matmuls in a jaxpr."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.extend import core  # pylint: disable=g-import-not-at-top
  total = 0.0
  for eqn in jaxpr.eqns:
    out = eqn.outvars[0].aval.shape
    if eqn.primitive.name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2.0 * np.prod(out) * np.prod(rhs) / out_features
    elif eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * np.prod(out) * np.prod([lhs[d] for d in contract])
    for sub in core.jaxprs_in_params(eqn.params):
      total += jaxpr_flops(sub)
  return total


def benchmark(config_name: str, *, steps: int, repeats: int, batch_size: int,
              dtype: str, assignments: list[str], with_torch: bool,
              input_mode: str = PIPELINE) -> dict[str, Any]:
  """Alternating fresh-process runs of JAX (and torch): all results."""
  runs = {"jax": [], "torch": []}
  for _ in range(repeats):
    jax_run = run_worker(["jax", "--config", config_name, "--steps",
                           str(steps), "--batch-size", str(batch_size),
                           "--dtype", dtype, "--input", input_mode,
                           *[f"--set={a}" for a in assignments]])
    runs["jax"].append(jax_run)
    spec = jax_run.get("torch_spec")
    if with_torch and spec:
      runs["torch"].append(run_worker(["torch", "--steps", str(steps),
                                        "--spec", json.dumps(spec)]))
  return dict(config=config_name, steps=steps, repeats=repeats,
              input=input_mode,
              machine=machine(), runs=runs, summary=summarize(runs))


_MEDIAN_KEYS = ("build_s", "compile_s", "time_to_first_step_s", "step_s",
                "images_per_s", "input_wait_fraction", "flops_per_step",
                "analytic_flops_per_step", "gflops_per_s",
                "matmul_peak_gflops", "input_images_per_s",
                "eval_images_per_s", "predict_images_per_s",
                "rss_at_start_bytes", "train_peak_rss_bytes", "peak_rss_bytes",
                "step_buffers_bytes", "device_peak_bytes", "num_params")


def summarize(runs: dict[str, list[dict]]) -> dict[str, Any]:
  """Medians over the repeats, and the JAX/torch ratios."""
  summary = {}
  for framework, results in runs.items():
    good = [r for r in results if "error" not in r]
    summary[framework] = {
        key: statistics.median(r[key] for r in good)
        for key in _MEDIAN_KEYS if good and key in good[0]}
  jax_s, torch_s = summary["jax"], summary["torch"]
  peaks = [r["matmul_peak_gflops"] for results in runs.values()
           for r in results if "matmul_peak_gflops" in r]
  if jax_s and peaks:
    summary["matmul_peak_gflops"] = max(peaks)
    summary["jax_fraction_of_peak"] = jax_s["gflops_per_s"] / max(peaks)
  if jax_s and torch_s:
    summary["speed_ratio_jax_over_torch"] = (jax_s["images_per_s"]
                                             / torch_s["images_per_s"])
    summary["memory_ratio_jax_over_torch"] = (
        jax_s["train_peak_rss_bytes"] / torch_s["train_peak_rss_bytes"])
    if "analytic_flops_per_step" in jax_s:
      summary["torch_fraction_of_peak"] = (
          jax_s["analytic_flops_per_step"] / torch_s["step_s"] / 1e9
          / max(peaks))
  return summary


def table(result: dict[str, Any]) -> str:
  """The summary as aligned text rows."""
  summary = result["summary"]
  rows = [("config", result["config"]),
          ("machine", f"{result['machine']['cpu']}, "
                      f"{result['machine']['cores']} cores"),
          ("versions", ", ".join(f"{k} {v}" for k, v in
                                 result["machine"]["versions"].items() if v))]
  for framework in ("jax", "torch"):
    for key, value in summary.get(framework, {}).items():
      rows.append((f"{framework} {key}", _format(key, value)))
    errors = [r["error"] for r in result["runs"][framework] if "error" in r]
    if errors:
      rows.append((f"{framework} errors", "; ".join(errors)))
  for key, value in summary.items():
    if not isinstance(value, dict):
      rows.append((key, _format(key, value)))
  loads = [r["load_1min"][0] for runs in result["runs"].values()
           for r in runs if "load_1min" in r]
  if loads:
    rows.append(("load average (1 min) before runs",
                 ", ".join(f"{x:.2f}" for x in loads)))
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _format(key: str, value) -> str:
  if key.endswith("bytes"):
    return f"{value / 2 ** 30:.2f} GiB"
  if "flops_per_step" in key:
    return f"{value / 1e9:.1f} GFLOP"
  if key.endswith(("fraction", "ratio_jax_over_torch", "of_peak")):
    return f"{value:.3f}"
  if isinstance(value, float):
    return f"{value:.3g}"
  return str(value)
