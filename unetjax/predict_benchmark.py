"""Overlap-tile inference next to MONAI: `unetjax-benchmark --predict`.

  unetjax-benchmark --predict                     # both cases, both sides
  unetjax-benchmark --predict --cases stack --tta --repeats 1

The config's U-Net (default: the ISBI-2012 one, 2,738,186 parameters,
freshly initialised: weights do not change the work) segments (a) a
30-page 512x512 TIFF stack and (b) one 4096x4096 PNG, in tiles of 256
pixels overlapping by a quarter, 8 tiles a batch, Hann-blended, as
`unetjax-predict` does (the JAX side runs `predict.segment_files`, the
same streaming reader, tiler and writer, on a `Segmenter`). The other side
is the same U-Net in PyTorch (`benchmark._torch_unet`) run through MONAI's
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

from unetjax import benchmark, compilation_cache

CASES = {"stack": (30, 512, 512), "image": (1, 4096, 4096)}
TILE, OVERLAP, BATCH = 256, 0.25, 8


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
  from unetjax import image_io  # pylint: disable=g-import-not-at-top
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
  from unetjax import models, tasks  # pylint: disable=g-import-not-at-top
  from unetjax.datasets import DataInfo  # pylint: disable=g-import-not-at-top
  config = benchmark.load_config(config_name)
  info = DataInfo(config_name, 2, 1, ("background", "foreground"))
  task = tasks.build(config, info)
  model = models.build(config, in_channels=1, num_outputs=task.num_outputs,
                       rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  model.eval()
  return model, task


def run_jax(config_name: str, path: str, output: str,
            tta: bool) -> dict[str, Any]:
  """`predict.segment_files` on one input: speed and memory."""
  from unetjax import parallel, predict  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed()  # XLA flags, as unetjax-predict
  import jax  # pylint: disable=g-import-not-at-top
  model, task = build_model(config_name)
  segment = predict.Segmenter(model, task, 1, tile_size=TILE,
                              batch_size=BATCH, tta=tta)
  shapes = {path: predict.input_shape(path)}
  ready = time.perf_counter()
  start_s = _process_seconds()
  predict.segment_files(segment, shapes, output)
  seconds = time.perf_counter() - ready
  return dict(framework="jax", jax_version=jax.__version__,
              startup_s=start_s, predict_s=seconds,
              megapixels_per_s=megapixels(path) / seconds,
              compiles=len(segment._compiled),  # pylint: disable=protected-access
              compile_s=segment.compile_seconds,
              process_s=_process_seconds(),
              peak_rss_bytes=benchmark.peak_rss_bytes(),
              device_peak_bytes=_device_peak(jax))


def _device_peak(jax) -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


# --- the MONAI worker --------------------------------------------------------


def torch_spec(model, task) -> dict[str, Any]:
  """The torch twin's spec for an unetjax UNet (SAME padding, BatchNorm)."""
  return dict(depth=model.depth, features=int(model.down[0].convs[0].out_features),
              batchnorm=bool(len(model.down[0].norms)), bn_momentum=0.9,
              in_channels=1, num_outputs=task.num_outputs)


def torch_state_dict(model) -> dict[str, np.ndarray]:
  """The NNX UNet's weights under the torch twin's names and layouts:
  conv kernels HWIO -> OIHW, the 2x2 up-sampling [2, 2, in, out] ->
  ConvTranspose2d's [in, out, 2, 2] (no flip: `layers.upsample_2x2`
  writes input pixel (h, w) times kernel[i, j] to output (2h+i, 2w+j),
  as ConvTranspose2d does), the 1x1 head's [in, out] -> [out, in, 1, 1]."""
  weights = {}

  def block(prefix, nnx_block):
    step = 3 if len(nnx_block.norms) else 2  # conv, [bn], relu
    for i, conv in enumerate(nnx_block.convs):
      weights[f"{prefix}.{step * i}.weight"] = np.asarray(
          conv.kernel[...]).transpose(3, 2, 0, 1)
      if conv.bias is not None:
        weights[f"{prefix}.{step * i}.bias"] = np.asarray(conv.bias[...])
    for i, norm in enumerate(nnx_block.norms):
      for ours, theirs in (("scale", "weight"), ("bias", "bias"),
                           ("mean", "running_mean"), ("var", "running_var")):
        weights[f"{prefix}.{step * i + 1}.{theirs}"] = np.asarray(
            getattr(norm, ours)[...])

  for i, down in enumerate(model.down):
    block(f"down.{i}", down)
  block("bottleneck", model.bottleneck)
  for i, (up, decode) in enumerate(zip(model.up, model.decode)):
    weights[f"up.{i}.weight"] = np.asarray(
        up.layer.kernel[...]).transpose(2, 3, 0, 1)
    weights[f"up.{i}.bias"] = np.asarray(up.layer.bias[...])
    block(f"decode.{i}", decode)
  weights["head.weight"] = np.asarray(
      model.head.kernel[...]).T[:, :, None, None]
  weights["head.bias"] = np.asarray(model.head.bias[...])
  return weights


def monai_infer(torch, model, image: np.ndarray, *, tta: bool,
                blend: str) -> np.ndarray:
  """Logits [H, W, outputs] of `image` [H, W, C] by MONAI's sliding window."""
  from monai.inferers import sliding_window_inference  # pylint: disable=g-import-not-at-top
  from unetjax import tiling  # pylint: disable=g-import-not-at-top

  def predictor(tiles):
    if not tta:
      return model(tiles)
    total = 0
    for turns in range(4):
      for flip in (False, True):
        view = torch.rot90(tiles, turns, dims=(2, 3))
        view = torch.flip(view, dims=(3,)) if flip else view
        out = model(view)
        out = torch.flip(out, dims=(3,)) if flip else out
        total = total + torch.rot90(out, -turns, dims=(2, 3))
    return total / 8

  hann = torch.from_numpy(np.outer(tiling.window(TILE),
                                   tiling.window(TILE)).astype(np.float32))
  x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
  with torch.no_grad():
    out = sliding_window_inference(
        x, TILE, BATCH, predictor, overlap=OVERLAP,
        mode="gaussian" if blend == "gaussian" else "constant",
        roi_weight_map=None if blend == "gaussian" else hann)
  return out[0].numpy().transpose(1, 2, 0)


def _torch_model(torch, spec, weights=None):
  model = benchmark._torch_unet(torch, spec)  # pylint: disable=protected-access
  if weights is not None:
    model.load_state_dict({k: torch.from_numpy(np.array(v))
                           for k, v in weights.items()}, strict=False)
  return model.eval()


def run_monai(spec: dict[str, Any], path: str, output: str, tta: bool,
              blend: str) -> dict[str, Any]:
  """A user's MONAI script on one input: read, infer page by page, write.

  `import monai` imports TensorFlow when it is installed (as it is next to
  unetjax), about 5 s and 0.5 GiB; it is kept out here, so the figures are
  MONAI's best, as in an environment without TensorFlow."""
  sys.modules.setdefault("tensorflow", None)  # import monai: no TF
  import tifffile  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import monai  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = _torch_model(torch, spec)
  ready = time.perf_counter()
  start_s = _process_seconds()
  os.makedirs(output, exist_ok=True)
  stem = os.path.splitext(os.path.basename(path))[0]
  if path.endswith(".tif"):
    pages = tifffile.imread(path)
    masks = np.stack([
        (monai_infer(torch, model, page[..., None].astype(np.float32) / 255,
                     tta=tta, blend=blend)[..., 0] > 0).astype(np.uint8)
        for page in pages])
    tifffile.imwrite(os.path.join(output, f"{stem}_mask.tif"), masks)
  else:
    image = np.asarray(Image.open(path), np.float32)[..., None] / 255
    mask = (monai_infer(torch, model, image, tta=tta,
                        blend=blend)[..., 0] > 0).astype(np.uint8)
    Image.fromarray(mask).save(os.path.join(output, f"{stem}_mask.png"))
  seconds = time.perf_counter() - ready
  return dict(framework="monai", torch_version=torch.__version__,
              monai_version=monai.__version__,
              torch_threads=torch.get_num_threads(), startup_s=start_s,
              predict_s=seconds, megapixels_per_s=megapixels(path) / seconds,
              process_s=_process_seconds(),
              peak_rss_bytes=benchmark.peak_rss_bytes())


# --- agreement of the blending maths -----------------------------------------


def agreement(config_name: str, directory: str) -> dict[str, Any]:
  """unetjax's and MONAI's logits with the same weights on two images."""
  import torch  # pylint: disable=g-import-not-at-top
  from unetjax import parallel, predict  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed()
  model, task = build_model(config_name)
  _calibrate_batchnorm(model)
  twin = _torch_model(torch, torch_spec(model, task), torch_state_dict(model))
  segment = predict.Segmenter(model, task, 1, tile_size=TILE,
                              batch_size=BATCH)
  rng = np.random.default_rng(1)
  result = {}
  for size in (1024, 512):
    image = rng.random((size, size, 1), np.float32)
    ours = segment.logits(image)
    theirs = monai_infer(torch, twin, image, tta=False, blend="hann")
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
  done = subprocess.run([sys.executable, "-m", "unetjax.predict_benchmark",
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
  spec = torch_spec(model, task)
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
              machine=benchmark.machine(), runs=runs,
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


def main(args) -> None:
  """`unetjax-benchmark --predict` with `benchmark.parse_args`'s args."""
  config = "isbi2012" if args.config == benchmark.REFERENCE else args.config
  if args.agree:
    print(json.dumps(agreement(config, ""), indent=2))
    return
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
    result = run_monai(json.loads(args.spec), args.input, args.output,
                       args.tta, args.blend)
  print(json.dumps(result))


if __name__ == "__main__":
  _worker_main(sys.argv[1:])
