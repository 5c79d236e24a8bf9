"""Overlap-tile inference next to MONAI: `unetjax-benchmark --predict`.

  unetjax-benchmark --predict                     # both cases, both sides
  unetjax-benchmark --predict --cases stack --tta --repeats 1

The config's U-Net (default: the ISBI-2012 one, 2,738,186 parameters,
freshly initialised: weights do not change the work) segments (a) a
30-page 512x512 TIFF stack and (b) one 4096x4096 PNG, in tiles of 256
pixels overlapping by a quarter, 8 tiles a batch, Hann-blended, as
`unetjax-predict` does (the JAX side runs `segment.segment_files`, the
same streaming reader, tiler and writer, on a `Segmenter`). The other side
is the same U-Net in PyTorch (`torch_unet.torch_unet`) run through MONAI's
`sliding_window_inference` with the same tile size, overlap, batch and
window (`roi_weight_map`; `--blend gaussian` for MONAI's own), reading
the TIFF with tifffile and the PNG with Pillow and writing the masks the
same way. Every run is a fresh process, the two sides alternating; the
table shows medians. Megapixels/s count the input's pixels over the time
from the model being ready to the last mask written (reading, compiling,
inference and writing: what a user waits for after start-up).

`--agree` checks the blending maths rather than speed: the NNX weights
are copied into the torch twin, and both sides predict the logits of a
1024x1024 image, whose tiles lie at the same places in both (stride 192
divides 1024 - 256), and of a 512x512 one, where MONAI moves the last
tile inwards and unetjax mirrors the border instead.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from unetjax.benchmarks import common, monai_worker
from unetjax.benchmarks.monai_worker import BATCH, TILE  # both sides' settings
from unetjax.runtime import compilation_cache

CASES = {"stack": (30, 512, 512), "image": (1, 4096, 4096)}


def write_inputs(directory: str, case: str, pages: int = 0,
                 size: int = 0) -> str:
  """The input file of a case, 8-bit noise (the work does not depend on
  the values); `pages`/`size` shrink it for quick runs."""
  import tifffile  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  count, height, width = CASES[case]
  count, height = pages or count, size or height
  width = size or width
  rng = np.random.default_rng(0)
  os.makedirs(directory, exist_ok=True)
  if case == "stack":
    path = os.path.join(directory, "stack.tif")
    tifffile.imwrite(path, rng.integers(0, 256, (count, height, width),
                                        dtype=np.uint8))
  else:
    path = os.path.join(directory, "image.png")
    Image.fromarray(rng.integers(0, 256, (height, width),
                                 dtype=np.uint8)).save(path)
  return path


def megapixels(path: str) -> float:
  from unetjax.data import image_io  # pylint: disable=g-import-not-at-top
  if path.endswith(".tif"):
    pages, height, width, _ = image_io.stack_shape(path)
  else:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(path) as image:
      (width, height), pages = image.size, 1
  return pages * height * width / 1e6


_LAUNCHED = "UNETJAX_BENCHMARK_LAUNCHED"  # time.time() when the driver
                                          # started this process


def _process_seconds() -> float:
  """Seconds since the driver launched this process (0 if not launched
  by it)."""
  return time.time() - float(os.environ.get(_LAUNCHED, time.time()))


# --- the JAX worker ----------------------------------------------------------


def build_model(config_name: str, seed: int = 0):
  """(model, task) of a segmentation config, freshly initialised."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from unetjax import (
    models,  # pylint: disable=g-import-not-at-top
    tasks,  # pylint: disable=g-import-not-at-top
  )
  from unetjax.data import DataInfo  # pylint: disable=g-import-not-at-top
  config = common.load_config(config_name)
  info = DataInfo(config_name, 2, 1, ("background", "foreground"))
  task = tasks.build(config, info)
  from unetjax.training import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  model = nnx.merge(*experiment_lib.initialize(lambda: models.build(
      config, in_channels=1, num_outputs=task.num_outputs,
      rngs=nnx.Rngs(params=seed, dropout=seed + 1))))
  model.eval()
  return model, task


def run_jax(config_name: str, path: str, output: str,
            tta: bool) -> dict[str, Any]:
  """`segment.segment_files` on one input: speed and memory."""
  from unetjax.inference import segment as segment_lib  # pylint: disable=g-import-not-at-top
  from unetjax.training import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed()  # XLA flags, as unetjax-predict
  import jax  # pylint: disable=g-import-not-at-top
  model, task = build_model(config_name)
  segmenter = segment_lib.Segmenter(model, task, 1, tile_size=TILE,
                                    batch_size=BATCH, tta=tta)
  shapes = {path: segment_lib.input_shape(path)}
  ready = time.perf_counter()
  start_s = _process_seconds()
  written = segment_lib.segment_files(segmenter, shapes, output, ["mask"])
  seconds = time.perf_counter() - ready
  return dict(framework="jax", jax_version=jax.__version__,
              startup_s=start_s, predict_s=seconds, written=len(written),
              megapixels_per_s=megapixels(path) / seconds,
              compiles=len(segmenter._compiled),  # pylint: disable=protected-access
              compile_s=segmenter.compile_seconds,
              process_s=_process_seconds(),
              peak_rss_bytes=common.peak_rss_bytes(),
              device_peak_bytes=_device_peak(jax))


def _device_peak(jax) -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


# --- agreement of the blending maths -----------------------------------------


def agreement(config_name: str, directory: str) -> dict[str, Any]:
  """unetjax's and MONAI's logits with the same weights on two images."""
  import torch  # pylint: disable=g-import-not-at-top

  from unetjax.inference import segment  # pylint: disable=g-import-not-at-top
  from unetjax.training import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed()
  model, task = build_model(config_name)
  _calibrate_batchnorm(model)
  twin = monai_worker.torch_model(torch, monai_worker.torch_spec(model, task),
                                  monai_worker.torch_state_dict(model))
  segment = segment.Segmenter(model, task, 1, tile_size=TILE,
                              batch_size=BATCH)
  rng = np.random.default_rng(1)
  result = {}
  for size in (1024, 512):
    image = rng.random((size, size, 1), np.float32)
    ours = segment.logits(image)
    theirs = monai_worker.monai_infer(torch, twin, image, tta=False,
                                      blend="hann")
    scale = float(np.abs(theirs).max())
    diff = np.abs(ours - theirs)
    result[f"{size}"] = dict(
        tiles_at_same_places=size == 1024,
        max_abs_diff=float(diff.max()), logit_scale=scale,
        max_rel_diff=float(diff.max()) / scale,
        mask_agreement=float(np.mean((ours > 0) == (theirs > 0))))
  return result


def _calibrate_batchnorm(model) -> None:
  """Running statistics from one batch of noise, so the freshly
  initialised model's logits are of ordinary size (not saturated)."""
  blocks = [*model.down, model.bottleneck, *model.decode]
  for norm in (norm for block in blocks for norm in block.norms):
    norm.momentum = 0.0
  model.train()
  model(np.random.default_rng(2).random((2, TILE, TILE, 1), np.float32))
  model.eval()


# --- the driver --------------------------------------------------------------


def _worker(args: list[str]) -> dict[str, Any]:
  started = time.perf_counter()
  load = os.getloadavg()[0]
  # No persistent compilation cache: every JAX run compiles cold.
  env = dict(os.environ, **{_LAUNCHED: repr(time.time()),
                            compilation_cache.OPT_OUT_VARIABLE: "0"})
  done = subprocess.run([sys.executable, "-m", "unetjax.benchmarks.predict",
                         *args], capture_output=True, text=True, check=False,
                        env=env)
  if done.returncode:
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return dict(error=tail)
  result = json.loads(done.stdout.strip().splitlines()[-1])
  result["wall_s"] = time.perf_counter() - started
  result["load_1min"] = load
  return result


def run(config_name: str, cases: list[str], *, repeats: int, tta: bool,
        blend: str, frameworks: list[str], pages: int = 0,
        size: int = 0) -> dict[str, Any]:
  """Alternating fresh-process runs of both sides on each case."""
  model, task = build_model(config_name)
  spec = monai_worker.torch_spec(model, task)
  runs = {}
  with tempfile.TemporaryDirectory() as tmp:
    for case in cases:
      path = write_inputs(os.path.join(tmp, "in"), case, pages, size)
      runs[case] = {framework: [] for framework in frameworks}
      for _ in range(repeats):
        for framework in frameworks:
          args = ["--worker", framework, "--config", config_name,
                  "--input", path, "--output", os.path.join(tmp, framework),
                  "--blend", blend, "--spec", json.dumps(spec)]
          runs[case][framework].append(_worker(args + (["--tta"] if tta
                                                       else [])))
  return dict(config=config_name, tta=tta, blend=blend, repeats=repeats,
              machine=common.machine(), runs=runs,
              summary=summarize(runs))


_KEYS = ("megapixels_per_s", "predict_s", "compile_s", "startup_s",
         "process_s",
         "wall_s", "peak_rss_bytes")


def summarize(runs: dict[str, dict[str, list[dict]]]) -> dict[str, Any]:
  """Per case and side the medians; the JAX / MONAI ratios."""
  summary = {}
  for case, sides in runs.items():
    summary[case] = {}
    for framework, results in sides.items():
      good = [r for r in results if "error" not in r]
      summary[case][framework] = {
          key: statistics.median(r[key] for r in good)
          for key in _KEYS if good and key in good[0]}
    ours, theirs = (summary[case].get("jax"), summary[case].get("monai"))
    if ours and theirs:
      summary[case]["speed_ratio"] = (ours["megapixels_per_s"]
                                      / theirs["megapixels_per_s"])
      summary[case]["memory_ratio"] = (ours["peak_rss_bytes"]
                                       / theirs["peak_rss_bytes"])
  return summary


def table(result: dict[str, Any]) -> str:
  """One row per case and side."""
  lines = [f"config {result['config']}, tta {result['tta']}, blend "
           f"{result['blend']}, {result['machine']['cpu']}, "
           f"{result['machine']['cores']} cores, median of "
           f"{result['repeats']}",
           f"{'case':<7}{'side':<7}{'Mpx/s':>8}{'predict s':>11}"
           f"{'process s':>11}{'peak RSS':>10}{'ratio':>7}{'mem':>6}"]
  for case, summary in result["summary"].items():
    for framework in ("jax", "monai"):
      row = summary.get(framework)
      if not row:
        continue
      ratio = (f"{summary['speed_ratio']:7.2f}{summary['memory_ratio']:6.2f}"
               if framework == "jax" and "speed_ratio" in summary else "")
      lines.append(f"{case:<7}{framework:<7}{row['megapixels_per_s']:8.3f}"
                   f"{row['predict_s']:11.1f}{row['wall_s']:11.1f}"
                   f"{row['peak_rss_bytes'] / 2 ** 30:9.2f}G{ratio}")
    for framework, results in result["runs"][case].items():
      for r in results:
        if "error" in r:
          lines.append(f"{case:<7}{framework:<7}error: {r['error']}")
  return "\n".join(lines)


def add_arguments(parser) -> None:
  group = parser.add_argument_group("--predict")
  group.add_argument("--cases", default="stack,image",
                     help="'stack' (30x512x512 TIFF), 'image' (4096x4096)")
  group.add_argument("--tta", action="store_true",
                     help="average over the 8 flips and rotations")
  group.add_argument("--blend", choices=("hann", "gaussian"), default="hann",
                     help="MONAI's window: unetjax's Hann, or its Gaussian")
  group.add_argument("--pages", type=int, default=0,
                     help="pages of the stack (0: 30)")
  group.add_argument("--size", type=int, default=0,
                     help="image side (0: the case's)")
  group.add_argument("--agree", action="store_true",
                     help="compare unetjax's and MONAI's logits instead")


def main(args) -> dict:
  """`unetjax-benchmark --predict` with `benchmark.parse_args`'s args."""
  config = "isbi2012" if args.config == common.REFERENCE else args.config
  if args.agree:
    print(json.dumps(agreement(config, ""), indent=2))
    return {}
  frameworks = [f for f in args.frameworks.split(",") if f in ("jax",
                                                                "monai")]
  if "monai" in frameworks and not _monai_available():
    print("monai/torch are not installed (pip install -e .[bench]): JAX "
          "only.", file=sys.stderr)
    frameworks.remove("monai")
  result = run(config, args.cases.split(","), repeats=args.repeats,
               tta=args.tta, blend=args.blend, frameworks=frameworks,
               pages=args.pages, size=args.size)
  print(table(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


def _monai_available() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return all(importlib.util.find_spec(name) for name in ("torch", "monai"))


def _worker_main(argv: list[str]) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  parser.add_argument("--worker", choices=("jax", "monai"), required=True)
  parser.add_argument("--config", required=True)
  parser.add_argument("--input", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--tta", action="store_true")
  parser.add_argument("--blend", default="hann")
  parser.add_argument("--spec", default="{}")
  args = parser.parse_args(argv)
  if args.worker == "jax":
    result = run_jax(args.config, args.input, args.output, args.tta)
  else:
    result = monai_worker.run_monai(json.loads(args.spec), args.input,
                                    args.output, args.tta, args.blend)
  print(json.dumps(result))


if __name__ == "__main__":
  _worker_main(sys.argv[1:])
