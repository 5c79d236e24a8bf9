"""Where a U-Net's training time goes: its 3x3 convolutions, level by level.

  unetjax-benchmark --layers                 # the reference U-Net's levels

A U-Net's training step is mostly convolutions, so the share of the matmul
peak a step can reach is bounded by how fast the backend runs them. This
times, at each level of a config's U-Net (the level's resolution and
width, the config's batch), one C -> C 3x3 convolution three ways: forward,
input gradient and weight gradient, in JAX through the package's own
convolution (`layers.late_input_conv`, as the model runs it) and in torch,
each framework in a fresh process, against the matmul peak measured there.
"""
import json
import statistics
from typing import Any

from unetjax.benchmarks import common

KERNEL = 3
PASSES = ("forward", "input_gradient", "weight_gradient")


def levels(config) -> list[dict[str, int]]:
  """Batch, size and width of each level of the config's U-Net."""
  model = config.model
  if model.name != "unet" or not isinstance(model.features, int):
    from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f"--layers times a U-Net's levels; model.name="
                      f"{model.name!r} with features={model.features!r} is "
                      "not a U-Net with an integer base width")
  size = config.augment.crop_size or config.data.image_size
  return [dict(batch=config.batch_size, size=size // 2 ** level,
               features=model.features * 2 ** level)
          for level in range(model.depth + 1)]


def conv_flops(level: dict[str, int]) -> float:
  """FLOPs of one pass (2 per multiply-add; each gradient costs the same)."""
  return (2.0 * level["batch"] * level["size"] ** 2 * KERNEL ** 2
          * level["features"] ** 2)


def run_jax(level_list: list[dict[str, int]],
            repeats: int) -> dict[str, Any]:
  """Seconds per pass at each level, through the package's convolution."""
  import jax  # pylint: disable=g-import-not-at-top

  from unetjax.benchmarks import common  # pylint: disable=g-import-not-at-top
  from unetjax.models import layers  # pylint: disable=g-import-not-at-top
  from unetjax.training import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed()  # the package's XLA flags

  def conv(x, kernel):
    return layers.late_input_conv(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  passes = {
      "forward": jax.jit(lambda x, k, g: conv(x, k)),
      "input_gradient": jax.jit(
          lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0]),
      "weight_gradient": jax.jit(
          lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0])}
  seconds = []
  for level in level_list:
    key_x, key_k, key_g = jax.random.split(jax.random.key(0), 3)
    shape = (level["batch"], level["size"], level["size"], level["features"])
    x, g = jax.random.normal(key_x, shape), jax.random.normal(key_g, shape)
    kernel = jax.random.normal(key_k, (KERNEL, KERNEL) + shape[-1:] * 2)
    seconds.append({name: common.warm_median_seconds(
        lambda f=f: jax.block_until_ready(f(x, kernel, g)), repeats)
                    for name, f in passes.items()})
  return dict(framework="jax", seconds=seconds,
              matmul_peak_gflops=common.jax_matmul_peak())


def run_torch(level_list: list[dict[str, int]],
              repeats: int) -> dict[str, Any]:
  """The same passes with torch's conv2d (NCHW, its native layout)."""
  import torch  # pylint: disable=g-import-not-at-top

  from unetjax.benchmarks import common  # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  conv = torch.nn.functional.conv2d
  sync = torch.cuda.synchronize if device == "cuda" else lambda: None
  seconds = []
  for level in level_list:
    shape = (level["batch"], level["features"], level["size"], level["size"])
    x, g = torch.randn(shape, device=device), torch.randn(shape, device=device)
    kernel = torch.randn(shape[1], shape[1], KERNEL, KERNEL, device=device)
    passes = {
        "forward": lambda: conv(x, kernel, padding=1),
        "input_gradient": lambda: torch.nn.grad.conv2d_input(
            shape, kernel, g, padding=1),
        "weight_gradient": lambda: torch.nn.grad.conv2d_weight(
            x, kernel.shape, g, padding=1)}
    seconds.append({name: common.warm_median_seconds(
        lambda f=f: (f(), sync()), repeats) for name, f in passes.items()})
  return dict(framework="torch", seconds=seconds,
              matmul_peak_gflops=common.torch_matmul_peak(device))


def summarize(level_list: list[dict[str, int]],
              runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
  """GFLOP/s per framework, level and pass (medians over the runs), and
  over all of them together: the most a train step made of these
  convolutions could reach, whatever else it does. The table shows each
  as a share of the best matmul peak of all runs."""
  peaks = [r["matmul_peak_gflops"] for results in runs.values()
           for r in results if "error" not in r]
  rows = [dict(level) for level in level_list]
  overall = {}
  for framework, results in runs.items():
    good = [r for r in results if "error" not in r]
    if not good:
      continue
    total_seconds = 0.0
    for index, (level, row) in enumerate(zip(level_list, rows)):
      for name in PASSES:
        seconds = statistics.median(r["seconds"][index][name] for r in good)
        row[f"{framework} {name}"] = conv_flops(level) / seconds / 1e9
        total_seconds += seconds
    overall[framework] = (len(PASSES) * sum(map(conv_flops, level_list))
                          / total_seconds / 1e9)
  return dict(matmul_peak_gflops=max(peaks, default=None), levels=rows,
              overall=overall,
              errors=[r["error"] for results in runs.values()
                      for r in results if "error" in r])


def table(summary: dict[str, Any]) -> str:
  """One line per level and framework: GFLOP/s and share of the peak."""
  peak = summary["matmul_peak_gflops"]
  if peak is None:
    return "\n".join(["no run succeeded"] + summary["errors"])
  lines = [f"3x3 convolutions, GFLOP/s (share of the {peak:.0f} GFLOP/s "
           "matmul peak)",
           f"{'level':<20}{'framework':<10}"
           + "".join(f"{name:>20}" for name in PASSES)]
  for row in summary["levels"]:
    where = f"{row['batch']}x{row['size']}x{row['size']}x{row['features']}"
    for framework in ("jax", "torch"):
      if f"{framework} forward" not in row:
        continue
      cells = [row[f"{framework} {name}"] for name in PASSES]
      lines.append(f"{where:<20}{framework:<10}" + "".join(
          f"{v:>12.0f} ({v / peak:4.0%})" for v in cells))
  for framework, value in summary["overall"].items():
    lines.append(f"{'all levels, passes':<20}{framework:<10}"
                 f"{value:>12.0f} ({value / peak:4.0%})")
  lines += [f"error: {error}" for error in summary["errors"]]
  return "\n".join(lines)


def benchmark_layers(config_name: str, *, steps: int, repeats: int,
                     batch_size: int, assignments: list[str],
                     with_torch: bool) -> dict[str, Any]:
  """Alternating fresh-process runs of `layer_benchmark`: all results."""
  config = common.load_config(config_name)
  if batch_size:
    config.batch_size = batch_size
  common.override(config, list(assignments))
  level_list = levels(config)
  frameworks = ["jax"] + (["torch"] if with_torch else [])
  runs = {framework: [] for framework in frameworks}
  for _ in range(repeats):
    for framework in frameworks:
      runs[framework].append(common.run_worker(
          [f"{framework}-layers", "--steps", str(steps), "--spec",
           json.dumps(level_list)]))
  return dict(config=config_name, steps=steps, repeats=repeats,
              machine=common.machine(), runs=runs,
              summary=summarize(level_list, runs))
