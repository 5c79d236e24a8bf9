"""Running an export: `unetjax-predict --model DIR_OR_ZIP`.

An export folder (`--format onnx` or `bioimageio`) or a bioimage.io zip
made by `unetjax-export` holds `model.onnx` and `unetjax.json`; this runs
the ONNX model with onnxruntime through the same overlap-tile inference,
task post-processing and output files as `--workdir`. Exports return
probabilities, so overlapping tiles are blended as probabilities, where the
workdir path blends logits: the two agree exactly when an image fits one
tile and to within the blending's rounding otherwise.
"""
import json
import os
import zipfile

import numpy as np

from unetjax import tasks
from unetjax.data import DataInfo
from unetjax.formats import normalization as norm
from unetjax.formats.exporter import META_FILE, ONNX_FILE
from unetjax.inference import inputs, pretrained, segment
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError, DataError

_TINY = np.float32(1e-30)


def read_export(path: str) -> tuple[dict, bytes]:
  """(unetjax.json, the ONNX model's bytes) of an export folder or zip."""
  if os.path.isdir(path):
    files = {name: os.path.join(path, name) for name in (META_FILE,
                                                         ONNX_FILE)}
    missing = [n for n, p in files.items() if not os.path.isfile(p)]
    if missing:
      raise DataError(f"--model={path}: no {missing[0]} there; expected a "
                      "folder written by unetjax-export --format onnx or "
                      "bioimageio")
    with open(files[META_FILE], encoding="utf-8") as f:
      meta_text = f.read()
    with open(files[ONNX_FILE], "rb") as f:
      weights = f.read()
  elif zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as archive:
      names = set(archive.namelist())
      missing = [n for n in (META_FILE, ONNX_FILE) if n not in names]
      if missing:
        raise DataError(f"--model={path}: the zip holds no {missing[0]}; "
                        "expected a bioimage.io package of unetjax-export")
      meta_text = archive.read(META_FILE).decode("utf-8")
      weights = archive.read(ONNX_FILE)
  else:
    raise DataError(f"--model={path}: neither an export folder nor a zip, "
                    "nor a shipped model (shipped: "
                    f"{', '.join(pretrained.NAMES)})")
  try:
    meta = json.loads(meta_text)
  except json.JSONDecodeError as e:
    raise DataError(f"--model={path}: {META_FILE} is not JSON: {e}") from e
  if not isinstance(meta, dict) or meta.get("unetjax_export") != 1:
    raise DataError(f"--model={path}: {META_FILE} is not a version-1 "
                    "unetjax export description")
  return meta, weights


class OnnxSegmenter(segment.Segmenter):
  """`segment.Segmenter` over an ONNX export run by onnxruntime.

  Only what differs is replaced: the tile sizes come from unetjax.json,
  each tile batch runs through onnxruntime (NHWC -> NCHW and back), and
  the task's `predict` is given the logits that reproduce the exported
  probabilities (log p for a softmax, logit(p) for a sigmoid).
  """

  def __init__(self, meta: dict, weights: bytes, task, *,
               tile_size: int = 256, batch_size: int = 8):
    # pylint: disable=super-init-not-called
    import onnxruntime  # pylint: disable=g-import-not-at-top
    sizes = {int(k): v for k, v in meta["sizes"].items()}
    self.outputs = {s: o for s, o in sorted(sizes.items()) if s <= tile_size}
    if not self.outputs:
      raise ConfigError(f"tile_size={tile_size} is below the smallest input "
                        f"this model accepts, {min(sizes)}")
    self.align = meta["align"]
    # The export's recorded normalisation, as `norm.normalize_unit` reads
    # it: the base class applies it tile by tile (`Segmenter.source`).
    self.normalization = norm.unit_setting(meta["normalize"])
    self.blend = all(size == out for size, out in self.outputs.items())
    self.task = task
    self.in_channels = meta["data_info"]["in_channels"]
    self.batch_size = batch_size
    self.compile_seconds = 0.0
    self._session = onnxruntime.InferenceSession(
        weights, providers=["CPUExecutionProvider"])
    sigmoid = meta["head"] == "sigmoid"

    def predict(probabilities):
      p = np.maximum(np.asarray(probabilities, np.float32), _TINY)
      logits = np.log(p) - (np.log(np.maximum(1 - p, _TINY)) if sigmoid
                            else 0)
      return task.predict(logits[None])[0]
    self._predict = predict
    self.prediction = np.asarray(predict(np.full(
        (8, 8, meta["num_outputs"]), 0.5, np.float32)))[None]

  def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
    output = self._session.run(None, {"input": np.ascontiguousarray(
        tiles.transpose(0, 3, 1, 2), np.float32)})[0]
    return output.transpose(0, 2, 3, 1)


def build_task(meta: dict):
  config = config_lib.base_config()
  config.update(meta["config"])
  info = meta["data_info"]
  return tasks.build(config, DataInfo(
      name=info["name"], num_classes=info["num_classes"],
      in_channels=info["in_channels"],
      class_names=tuple(info["class_names"]),
      instances=info["instances"])), config


def predict_files(model: str, pattern: str, output: str, *,
                  tile_size: int = 256, batch_size: int = 8,
                  probabilities: bool = False, overlay: bool = False,
                  overwrite: bool = False,
                  instances: bool = False) -> list[str]:
  """`segment.predict_files` for an export: checks first, then writes."""
  inputs.check_counts(tile_size, batch_size)
  meta, weights = read_export(model)
  paths = inputs.input_paths(pattern, output)
  kinds = (["mask"] + ["prob"] * probabilities + ["overlay"] * overlay
           + ["instances"] * instances)
  inputs.check_outputs(paths, output, kinds, overwrite)
  shapes = {path: inputs.input_shape(path) for path in paths}
  in_channels = meta["data_info"]["in_channels"]
  for path, (_, count) in shapes.items():
    if count != in_channels:
      raise DataError(f"{path}: {count} channel(s); the model {model} takes "
                      f"{in_channels}")
  task, config = build_task(meta)
  if instances and not hasattr(task, "to_instances"):
    raise ConfigError(f"--instances: the model {model} was trained with "
                      f"task.name={config.task.name!r}, which finds no "
                      "objects")
  segmenter = OnnxSegmenter(meta, weights, task, tile_size=tile_size,
                            batch_size=batch_size)
  if probabilities and not np.issubdtype(segmenter.prediction.dtype,
                                         np.floating):
    raise ConfigError(f"task {config.task.name!r} predicts class ids, not "
                      "probabilities: drop --probabilities")
  return segment.segment_files(segmenter, shapes, output, kinds,
                               task.to_instances if instances else None)
