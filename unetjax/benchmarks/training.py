"""The training benchmark: the package's own train step on a config's real
input pipeline, beside the same U-Net written in PyTorch, each in fresh
processes, alternating (`unetjax-benchmark`, no mode flag)."""
import itertools
import json
import os
import statistics
import time
from typing import Any

from unetjax.benchmarks.common import (
  jax_matmul_peak,
  load_config,
  machine,
  median_seconds,
  override,
  peak_rss_bytes,
  run_worker,
  torch_matmul_peak,
  warm_median_seconds,
)

PIPELINE, FIXED = "pipeline", "fixed"


def fixed_batch(split, batch_size: int, crop_size: int) -> dict[str, Any]:
  """The first `batch_size` training examples as the pipeline would give
  them, without augmentation: the same shapes and value ranges."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if split.sizes is not None or len(split) < batch_size:
    raise ConfigError(f"--input {FIXED} needs {batch_size} training examples "
                      f"of one size; this split has {len(split)}"
                      + (" of varying sizes" if split.sizes is not None
                         else ""))
  images = split.images[:batch_size]
  images = (images / np.float32(255) if images.dtype == np.uint8
            else images.astype(np.float32))
  labels = split.labels[:batch_size]
  if crop_size:
    images = images[:, :crop_size, :crop_size]
    labels = labels[:, :crop_size, :crop_size]
  return {"image": images, "label": labels}


def run_jax(config_name: str, steps: int, batch_size: int,
            dtype: str = "", assignments: tuple[str, ...] = (),
            input_mode: str = PIPELINE) -> dict[str, Any]:
  """One fresh process's measurements of the package's own train step."""
  import jax  # pylint: disable=g-import-not-at-top

  from unetjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from unetjax.data import normalize  # pylint: disable=g-import-not-at-top
  from unetjax.training import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from unetjax.training import health as health_lib  # pylint: disable=g-import-not-at-top
  from unetjax.training import parallel  # pylint: disable=g-import-not-at-top
  from unetjax.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed()
  rss_at_start = peak_rss_bytes()
  started = time.perf_counter()
  config = load_config(config_name)
  if batch_size:
    config.batch_size = config.eval_batch_size = batch_size
  if dtype:
    config.dtype = dtype
  override(config, list(assignments))
  experiment = experiment_lib.build_experiment(config)
  steps_fns = steps_lib.jit_steps(experiment)
  sharding = parallel.data_sharding(experiment.mesh)
  split = experiment_lib.train_split(config, experiment.dataset)

  def batches():
    return input_pipeline.train_batches(
        split, batch_size=config.batch_size, seed=config.seed, start_step=0,
        augment_config=config.augment,
        normalization=normalize.setting(config))

  if input_mode == FIXED:
    stream = itertools.repeat(fixed_batch(split, config.batch_size,
                                          config.augment.crop_size))
  else:
    stream = batches()
  state = experiment.state
  replicated = parallel.replicated(experiment.mesh)
  metrics = jax.device_put(experiment.task.metrics_class.empty(), replicated)
  health = jax.device_put(health_lib.initial_health(), replicated)
  batch = parallel.global_batch(next(stream), sharding)
  build_s = time.perf_counter() - started
  compile_start = time.perf_counter()
  compiled = steps_lib.compile_ahead(steps_fns.train, state, metrics,
                                     health, batch)
  compile_s = time.perf_counter() - compile_start
  state, metrics, health = jax.block_until_ready(steps_fns.train(
      state, metrics, health, batch))
  first_step_s = time.perf_counter() - started

  step_times, waits = [], []
  for _ in range(steps):
    step_start = time.perf_counter()
    if input_mode != FIXED:  # a fixed batch stays on the device
      batch = parallel.global_batch(next(stream), sharding)
    waits.append(time.perf_counter() - step_start)
    state, metrics, health = jax.block_until_ready(steps_fns.train(
        state, metrics, health, batch))
    step_times.append(time.perf_counter() - step_start)
  step_s = statistics.median(step_times)
  train_rss = peak_rss_bytes()

  flops = compiled.cost_analysis()["flops"]
  memory = compiled.memory_analysis()
  device_peak = _device_peak_bytes(jax.devices()[0])
  peak = jax_matmul_peak(config.dtype)
  image = batch["image"]
  model_flops = analytic_train_flops(experiment, image)
  result = dict(
      framework="jax", config=config_name, device=str(jax.devices()[0]),
      dtype=config.dtype,
      xla_flags=os.environ.get("XLA_FLAGS", ""),
      batch_size=config.batch_size, input_shape=list(image.shape[1:]),
      num_params=experiment.num_params,
      build_s=build_s, compile_s=compile_s,
      time_to_first_step_s=first_step_s,
      step_s=step_s, images_per_s=config.batch_size / step_s,
      input_wait_fraction=sum(waits) / sum(step_times),
      flops_per_step=flops, analytic_flops_per_step=model_flops,
      gflops_per_s=model_flops / step_s / 1e9, matmul_peak_gflops=peak,
      input=input_mode,
      eval_images_per_s=_inference_throughput(
          steps_fns.eval, state, batch, config.batch_size),
      predict_images_per_s=_inference_throughput(
          steps_fns.predict, state, batch, config.batch_size),
      rss_at_start_bytes=rss_at_start, train_peak_rss_bytes=train_rss,
      peak_rss_bytes=peak_rss_bytes(),
      step_buffers_bytes=_buffer_bytes(memory),
      torch_spec=_torch_spec(config, experiment, image.shape))
  if device_peak is not None:
    result["device_peak_bytes"] = device_peak
  if input_mode == PIPELINE:
    result["input_images_per_s"] = input_throughput(batches(),
                                                    config.batch_size)
  return result


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


def _torch_spec(config, experiment, shape) -> dict[str, Any] | None:
  """What the torch twin needs, or None for a model it does not mirror."""
  model = dict(config.model)
  plain = (model.get("name") == "unet" and isinstance(model.get("features"),
                                                      int)
           and all(model.get(k, d) == d for k, d in _TORCH_DEFAULTS.items()))
  if not plain:
    return None
  return dict(depth=model["depth"], features=model["features"],
              batchnorm=model.get("batchnorm", False),
              bn_momentum=model.get("bn_momentum", 0.9),
              in_channels=experiment.dataset.info.in_channels,
              num_outputs=experiment.task.num_outputs,
              input_shape=[int(s) for s in shape],
              learning_rate=config.optimizer.learning_rate,
              dtype=config.dtype,
              num_params=experiment.num_params)


# UNet options the torch twin implements only at these values.
_TORCH_DEFAULTS = dict(padding="SAME", kernel_size=3, convs_per_level=2,
                       activation="relu", dropout=0.0, skip=True,
                       upsampling="transpose", dilate=False)


def run_torch(spec: dict[str, Any], steps: int) -> dict[str, Any]:
  """The same U-Net, loss and optimizer in PyTorch, on random batches.

  On a GPU if torch sees one; bfloat16 compute through autocast when the
  JAX side computes in bfloat16.
  """
  import torch  # pylint: disable=g-import-not-at-top
  rss_at_start = peak_rss_bytes()
  started = time.perf_counter()
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    # As JAX on a GPU by default: TF32 in float32 matmuls and convolutions,
    # and the fastest convolution algorithms picked by trial.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
  autocast = torch.autocast(device, dtype=torch.bfloat16,
                            enabled=spec["dtype"] == "bfloat16")
  model = torch_unet(torch, spec).to(device)
  num_params = sum(p.numel() for p in model.parameters())
  optimizer = torch.optim.Adam(model.parameters(),
                               lr=spec["learning_rate"])
  loss_fn = torch.nn.BCEWithLogitsLoss()
  n, h, w, c = spec["input_shape"]
  images = torch.rand(n, c, h, w, device=device)
  labels = (torch.rand(n, spec["num_outputs"], h, w, device=device)
            > 0.5).float()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      logits = model(images)
    loss = loss_fn(logits.float(), labels)
    loss.backward()
    optimizer.step()
    return loss.item()

  model.train()
  step()
  first_step_s = time.perf_counter() - started
  step_s = median_seconds(step, steps)
  train_rss = peak_rss_bytes()
  peak = torch_matmul_peak(device, spec["dtype"])
  model.eval()
  with torch.no_grad(), autocast:
    predict_s = median_seconds(
        lambda: torch.sigmoid(model(images)).sum().item(), 3)
  return dict(framework="torch", torch_version=torch.__version__,
              device=device,
              torch_threads=torch.get_num_threads(), num_params=num_params,
              time_to_first_step_s=first_step_s, step_s=step_s,
              images_per_s=n / step_s, matmul_peak_gflops=peak,
              predict_images_per_s=n / predict_s,
              rss_at_start_bytes=rss_at_start, train_peak_rss_bytes=train_rss,
              peak_rss_bytes=peak_rss_bytes())


def torch_unet(torch, spec):
  """The torch twin of unetjax's UNet with SAME padding, as in the spec."""
  nn = torch.nn
  widths = [spec["features"] * 2 ** level for level in range(spec["depth"] + 1)]

  def block(cin, cout):
    layers = []
    for i in range(2):
      layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1,
                              bias=not spec["batchnorm"]))
      if spec["batchnorm"]:
        layers.append(nn.BatchNorm2d(cout, eps=1e-5,
                                     momentum=1 - spec["bn_momentum"]))
      layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)

  class UNet(nn.Module):
    """Encoder, bottleneck, decoder with concatenated skips, 1x1 head."""

    def __init__(self):
      super().__init__()
      cin = spec["in_channels"]
      self.down = nn.ModuleList()
      for width in widths[:-1]:
        self.down.append(block(cin, width))
        cin = width
      self.bottleneck = block(cin, widths[-1])
      self.up = nn.ModuleList()
      self.decode = nn.ModuleList()
      for level in reversed(range(spec["depth"])):
        self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level],
                                          2, stride=2))
        self.decode.append(block(2 * widths[level], widths[level]))
      self.head = nn.Conv2d(widths[0], spec["num_outputs"], 1)

    def forward(self, x):
      skips = []
      for down in self.down:
        x = down(x)
        skips.append(x)
        x = nn.functional.max_pool2d(x, 2)
      x = self.bottleneck(x)
      for up, decode, skip in zip(self.up, self.decode, reversed(skips)):
        x = decode(torch.cat([skip, up(x)], dim=1))
      return self.head(x)

  return UNet()


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
