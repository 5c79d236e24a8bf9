"""`unetjax-export`: a trained workdir as files other tools run.

Three formats, each a folder:
  onnx        model.onnx (NCHW, probabilities, opset 17) + unetjax.json
  stablehlo   model.stablehlo (`jax.export`, NHWC, probabilities) +
              unetjax.json
  bioimageio  a BioImage Model Zoo 0.5 package: rdf.yaml, the ONNX weights,
              test tensors, cover, docs, unetjax.json; and the same as
              <name>.zip, the file deepImageJ, ilastik and bioimage.io take

`unetjax.json` holds what `unetjax-predict --model` needs to run the export
as the workdir runs: the config, the dataset facts, the output head, the
input normalisation and the valid tile sizes. Everything is checked and
built in a temporary folder next to --out, renamed into place at the end:
a failed export writes nothing.
"""
import json
import os
import shutil
import tempfile

import jax
import numpy as np
from flax import nnx

from unetjax.data import image_io, normalize
from unetjax.formats import onnx_graph
from unetjax.inference import trained
from unetjax.models.unet import valid_input_sizes
from unetjax.runtime.errors import CheckpointError, ConfigError, WorkdirError
from unetjax.training import workdir as workdir_lib

FORMATS = ("bioimageio", "onnx", "stablehlo")
META_FILE = "unetjax.json"
ONNX_FILE = "model.onnx"
STABLEHLO_FILE = "model.stablehlo"
META_VERSION = 1
# Tasks whose model outputs per-pixel probabilities after this head.
_HEADS = {"binary_segmentation": "sigmoid", "segmentation": "softmax"}


def check_request(workdir: str | None, out: str, fmt: str,
                  overwrite: bool) -> None:
  """One line for each bad request, before anything is read or written
  (`workdir` None: a shipped model, which needs no checkpoint)."""
  if fmt not in FORMATS:
    raise ConfigError(f"--format={fmt!r}: expected one of {FORMATS}")
  if workdir is not None:
    _check_workdir(workdir)
  if os.path.lexists(out) and not overwrite:
    raise WorkdirError(f"--out={out} exists already; pass --overwrite to "
                       "replace it, or choose another --out")
  if os.path.lexists(out) and not os.path.isdir(out):
    raise WorkdirError(f"--out={out} is a file; expected a folder")


def _check_workdir(workdir: str) -> None:
  if not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir}: no such directory")
  checkpoints = os.path.join(workdir, workdir_lib.CHECKPOINTS)
  if not os.path.isdir(checkpoints) or not any(
      name.isdigit() for name in os.listdir(checkpoints)):
    raise CheckpointError(f"--workdir={workdir} holds no checkpoint "
                          f"({checkpoints}); train it first")


def output_head(config) -> str:
  """'sigmoid' or 'softmax': what turns the model's logits into the
  probabilities an export returns."""
  name = config.task.name
  if name == "instances":
    return "softmax" if config.task.get("target") == "three_class" else (
        "sigmoid")
  if name not in _HEADS:
    raise ConfigError(f"task.name={name!r} cannot be exported: exports "
                      "return per-pixel probabilities, for tasks "
                      f"{sorted([*_HEADS, 'instances'])}")
  return _HEADS[name]


def normalization(workdir: str, config) -> dict:
  """How training made images the model's input: the `input` record of
  experiment.json (`data/normalize.py` wrote it), or the config's
  `data.normalize` for a workdir from before that record (images were
  divided by 255 before either existed). Returns {'mode': 'scale'} or
  {'mode': 'percentile', 'low': p, 'high': q}; a record that is not one of
  these is refused (a silent mismatch would give wrong probabilities)."""
  facts_path = os.path.join(workdir, workdir_lib.FACTS_FILE)
  recorded = None
  if os.path.exists(facts_path):
    with open(facts_path, encoding="utf-8") as f:
      recorded = json.load(f).get("input")
  if recorded is None:
    recorded = {k: config.data[k] for k in ("normalize", "percentiles")
                if k in config.data}
  try:
    chosen = normalize.check(recorded)
  except (ConfigError, TypeError, ValueError) as e:
    raise WorkdirError(f"{facts_path}: input normalisation {recorded!r:.200}"
                       f": {e}") from None
  return _mode(chosen)


def _mode(chosen: dict) -> dict:
  """A checked `normalize.setting` as the export describes it."""
  if chosen["normalize"] == "scale":
    return {"mode": "scale"}
  low, high = chosen["percentiles"]
  return {"mode": "percentile", "low": low, "high": high}


def export(workdir: str, out: str, *, fmt: str = "bioimageio",
           checkpoint: str = "best", overwrite: bool = False,
           name: str | None = None, author: str = "unetjax",
           test_image: str | None = None,
           shipped: str | None = None) -> list[str]:
  """Writes the export of `workdir` (or of the shipped model `shipped`,
  e.g. 'nuclei') to the folder `out`; returns its files."""
  check_request(None if shipped else workdir, out, fmt, overwrite)
  if shipped:
    from unetjax.inference import pretrained  # pylint: disable=g-import-not-at-top
    run = pretrained.load(shipped)
    workdir = pretrained.folder(shipped)  # holds metrics.json and the cover
    mode = _mode(run.input)
  else:
    run = trained.load(workdir, checkpoint)
    mode = normalization(workdir, run.config)
  model = run.model()
  model.eval()
  head = output_head(run.config)
  onnx_graph.check_exportable(model, head)
  meta = _meta(workdir, run, model, head, mode)
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
  try:
    _write_json(os.path.join(staging, META_FILE), meta)
    if fmt == "stablehlo":
      write_stablehlo(model, head, meta, os.path.join(staging,
                                                      STABLEHLO_FILE))
    else:
      proto = onnx_graph.model_graph(model, head,
                                     in_channels=run.info.in_channels)
      with open(os.path.join(staging, ONNX_FILE), "wb") as f:
        f.write(proto.SerializeToString())
    if fmt == "bioimageio":
      from unetjax.formats import bioimageio  # pylint: disable=g-import-not-at-top
      bioimageio.package(staging, workdir, meta, sample_input(
          meta, test_image), name=name or _default_name(workdir),
                         author=author)
    if os.path.lexists(out):
      shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
    os.rename(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return sorted(os.path.join(out, f) for f in os.listdir(out))


def _meta(workdir: str, run, model, head: str, mode: dict) -> dict:
  if hasattr(model, "output_size"):  # a U-Net
    align, padding = 2 ** model.depth, model.padding
    sizes = {s: model.output_size(s)
             for s in valid_input_sizes(model, limit=4096)}
  else:  # FCN-32: multiples of its stride, output the input's size
    align, padding = onnx_graph.STRIDE, "SAME"
    sizes = {s: s for s in range(align, 4097, align)}
  return {
      "unetjax_export": META_VERSION,
      "workdir": os.path.abspath(workdir),
      "step": int(run.step),
      "config": run.config.to_dict(),
      "data_info": {"name": run.info.name,
                    "num_classes": run.info.num_classes,
                    "in_channels": run.info.in_channels,
                    "class_names": list(run.info.class_names),
                    "instances": run.info.instances},
      "head": head,
      "num_outputs": int(run.task.num_outputs),
      "normalize": mode,
      "align": align,  # height and width are multiples of it
      "padding": padding,
      # input size -> output size, for tiling (equal for SAME padding)
      "sizes": {str(s): out for s, out in sizes.items()},
  }


def _write_json(path: str, value) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, default=str)
    f.write("\n")


def _default_name(workdir: str) -> str:
  """The workdir's name; bioimage.io wants at least 5 characters."""
  name = os.path.basename(os.path.abspath(workdir))
  return name if len(name) >= 5 else f"unetjax {name}".strip()


def forward_function(model, head: str):
  """NHWC images (normalised as training did) -> NHWC probabilities."""
  graphdef, state = nnx.split(model)

  def forward(images):
    logits = nnx.merge(graphdef, state)(images).astype(np.float32)
    if head == "sigmoid":
      return jax.nn.sigmoid(logits)
    return jax.nn.softmax(logits, axis=-1)
  return forward


def write_stablehlo(model, head: str, meta: dict, path: str) -> None:
  """`jax.export` of the forward pass, batch and size symbolic: height and
  width are multiples of `align` by construction, so the model's own
  size checks hold for every size it accepts."""
  if meta["padding"] != "SAME":
    raise ConfigError("a VALID-padded U-Net exports to ONNX and bioimageio, "
                      "not to StableHLO (its output size is the input's "
                      "minus a border)")
  align = meta["align"]
  batch, height, width = jax.export.symbolic_shape(
      f"b, {align}*h, {align}*w")
  spec = jax.ShapeDtypeStruct(
      (batch, height, width, meta["data_info"]["in_channels"]), np.float32)
  exported = jax.export.export(jax.jit(forward_function(model, head)))(spec)
  with open(path, "wb") as f:
    f.write(exported.serialize())


def sample_input(meta: dict, test_image: str | None) -> np.ndarray:
  """A raw test image [H, W, C] as the model's users hold it (0..255 for
  8-bit data): --test_image, else the first image of the package's
  embedded nuclei set, cropped to a valid size of at most 256."""
  if test_image is None:
    from importlib import resources  # pylint: disable=g-import-not-at-top
    folder = resources.files("unetjax.data") / "nuclei_data" / "images"
    test_image = str(sorted(folder.iterdir())[0])
  image = image_io.read_image(test_image,
                              channels=meta["data_info"]["in_channels"])
  sizes = [int(s) for s in meta["sizes"]]
  fit = [[s for s in sizes if s <= min(256, n)] for n in image.shape[:2]]
  if not fit[0] or not fit[1]:
    raise ConfigError(f"--test_image={test_image}: {image.shape[0]}x"
                      f"{image.shape[1]} is smaller than the model's "
                      f"smallest input, {sizes[0]}")
  return np.round(image[:fit[0][-1], :fit[1][-1]] * 255).astype(np.float32)
