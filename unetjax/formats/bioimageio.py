"""A BioImage Model Zoo 0.5 package of an ONNX export (`bioimageio.spec`).

The flow follows Cellpose's exporter (`cellpose/export.py`): describe the
model with `v0_5.ModelDescr` (axes, valid sizes, preprocessing in the
spec's own operations, test tensors, weights, cover, docs), run
`bioimageio.core.test_model` on it, then save it as a folder and a zip.
Imported only for `--format bioimageio`: `bioimageio.spec` and `.core`
are the `export` extra, not dependencies of the package.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pydantic

from unetjax.formats import normalization
from unetjax.runtime.errors import ConfigError, DataError

try:
  import bioimageio.core
  from bioimageio.spec import save_bioimageio_package
  from bioimageio.spec.model import v0_5
except ImportError as e:  # pragma: no cover - depends on the extra
  raise ConfigError("--format bioimageio needs the export extra: pip install "
                    "'unetjax[export]'") from e

_AXES = ("y", "x")
_OBJECTS = {
    "components": "connected components of the interior class (or of the "
                  "foreground), grown back over the boundary",
    "watershed": "a marker-based watershed of the interior class"}


def preprocessing(normalize: dict) -> list:
  """The normalisation training applied, in the spec's operations, from the
  raw image (0..255 for 8-bit data) to the model's input."""
  if normalize["mode"] == "scale":
    return [v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(
        gain=1 / 255, offset=0.0))]
  return [v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
      axes=[v0_5.AxisId(a) for a in _AXES],
      min_percentile=normalize["low"], max_percentile=normalize["high"]))]


def output_names(meta: dict) -> list[str]:
  """What each output channel is the probability of."""
  task = meta["config"]["task"]
  if task["name"] == "instances" and meta["num_outputs"] == 3:
    return ["background", "interior", "boundary"]
  names = list(meta["data_info"]["class_names"])
  if meta["head"] == "sigmoid":
    return [names[-1] if names else "foreground"]
  if len(names) != meta["num_outputs"]:
    return [f"class{i}" for i in range(meta["num_outputs"])]
  return names


def _tensor_sizes(meta: dict):
  """Input y/x sizes (min and step) and the output's offset from them."""
  sizes = {int(k): v for k, v in meta["sizes"].items()}
  smallest = min(sizes)
  step = meta["align"]
  return smallest, step, sizes[smallest] - smallest


def _docs(workdir: str, meta: dict) -> str:
  config, info = meta["config"], meta["data_info"]
  names = output_names(meta)
  metrics_path = os.path.join(workdir, "metrics.json")
  scores = {}
  if os.path.exists(metrics_path):
    with open(metrics_path, encoding="utf-8") as f:
      metrics = json.load(f)
    held_out = metrics.get("test") or {}
    scores = {k: v for k, v in held_out.items()
              if isinstance(v, (int, float))}
  rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(scores.items()))
  instances = ""
  if info["instances"]:
    instances = (
        "\n## From probabilities to objects\n\nThe output holds each "
        f"pixel's class probabilities ({', '.join(names)}). "
        "unetjax turns them into objects with its instance post-processing "
        f"(`task.objects={config['task'].get('objects', '')!r}`: "
        f"{_OBJECTS.get(config['task'].get('objects'), 'see its docs')}); "
        "`unetjax-predict --model <this package> --instances` does it.\n")
  meaning = (f"the foreground ({names[0]})" if meta["head"] == "sigmoid"
             else "the classes " + ", ".join(names) + " (they sum to 1)")
  normalize = meta["normalize"]
  norm = ("x / 255 (8-bit images)" if normalize["mode"] == "scale" else
          f"per image and channel, percentiles {normalize['low']} and "
          f"{normalize['high']} mapped to 0 and 1")
  return f"""# {info['name']} U-Net (unetjax)

A U-Net trained with unetjax (config below), exported from its checkpoint
at step {meta['step']}.

## Input and output

- Input: {info['in_channels']} channel(s), any height and width that are
  multiples of {meta['align']}; normalised as in training: {norm}.
- Output: per-pixel probabilities ({meta['head']}) of {meaning}.
{instances}
## Data and training

Dataset `{info['name']}` (`data` section of the config below). The command:

    python -m unetjax.main --config <config> --workdir <workdir>

with this resolved config:

```json
{json.dumps({k: config[k] for k in ('model', 'data', 'task', 'optimizer',
                                     'schedule', 'num_steps', 'batch_size')
             if k in config}, indent=1, default=str)}
```

## Held-out test scores (metrics.json)

| metric | value |
| --- | --- |
{rows or '| (no test scores in the workdir) | |'}
"""


def package(folder: str, workdir: str, meta: dict, raw: np.ndarray, *,
            name: str, author: str) -> str:
  """Adds the bioimage.io description to an ONNX export in `folder`, tests
  it with `bioimageio.core.test_model` and saves `<folder>/<name>.zip`."""
  info = meta["data_info"]
  raw = raw.transpose(2, 0, 1)[None]  # [1, C, H, W]
  session = onnxruntime.InferenceSession(
      os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
  output = session.run(None, {"input": normalization.normalize_raw(
      raw, meta["normalize"])})[0]
  np.save(os.path.join(folder, "test_input.npy"), raw)
  np.save(os.path.join(folder, "test_output.npy"), output)
  smallest, step, offset = _tensor_sizes(meta)
  channels = [v0_5.Identifier(f"channel{i}")
              for i in range(info["in_channels"])]
  classes = output_names(meta)
  input_id = v0_5.TensorId("raw")
  inputs = [v0_5.InputTensorDescr(
      id=input_id, description="raw image",
      axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=channels)] + [
          v0_5.SpaceInputAxis(id=v0_5.AxisId(a), size=v0_5.ParameterizedSize(
              min=smallest, step=step)) for a in _AXES],
      test_tensor=v0_5.FileDescr(source=Path(folder, "test_input.npy")),
      data=v0_5.IntervalOrRatioDataDescr(type="float32"),
      preprocessing=preprocessing(meta["normalize"]))]
  outputs = [v0_5.OutputTensorDescr(
      id=v0_5.TensorId("probabilities"),
      description=f"per-pixel {meta['head']} probabilities",
      axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(
          channel_names=[v0_5.Identifier(_identifier(c)) for c in classes])]
      + [v0_5.SpaceOutputAxis(id=v0_5.AxisId(a), size=v0_5.SizeReference(
          tensor_id=input_id, axis_id=v0_5.AxisId(a), offset=offset))
         for a in _AXES],
      test_tensor=v0_5.FileDescr(source=Path(folder, "test_output.npy")),
      data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))]
  docs = Path(folder, "README.md")
  docs.write_text(_docs(workdir, meta), encoding="utf-8")
  cover = os.path.join(workdir, "plots", "samples.png")
  covers = []
  if os.path.exists(cover):
    shutil.copy(cover, os.path.join(folder, "cover.png"))
    covers = [v0_5.FileDescr(source=Path(folder, "cover.png"))]
  try:
    descr = _describe(name, author, info, meta, covers, docs, folder,
                      inputs, outputs)
  except pydantic.ValidationError as e:
    first = e.errors()[0]
    raise ConfigError(f"bioimage.io rejects the package's "
                      f"{'.'.join(str(p) for p in first['loc'])} "
                      f"({first.get('input')!r:.60}): {first['msg']}"
                      + (" (--name)" if first["loc"][:1] == ("name",)
                         else "")) from None
  summary = bioimageio.core.test_model(descr)
  if summary.status != "passed":
    failed = [d for d in summary.details if d.status == "failed"]
    raise DataError("the bioimage.io package fails bioimageio.core."
                    f"test_model: {failed[0].name if failed else ''}: "
                    f"{failed[0].errors[:1] if failed else summary.status}")
  zip_path = os.path.join(folder, f"{_identifier(name)}.zip")
  save_bioimageio_package(descr, output_path=Path(zip_path))
  return zip_path


def _identifier(text: str) -> str:
  cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in text)
  return cleaned if cleaned[:1].isalpha() else f"c_{cleaned}"


def _describe(name, author, info, meta, covers, docs, folder, inputs,
              outputs):
  """The package's `v0_5.ModelDescr` (pydantic checks every field)."""
  return v0_5.ModelDescr(
      name=name, description=f"U-Net for {info['name']} ({meta['head']} "
      "probabilities per pixel), trained and exported with unetjax",
      authors=[v0_5.Author(name=author)], covers=covers,
      license=v0_5.LicenseId("CC-BY-4.0"),
      documentation=v0_5.FileDescr(source=docs),
      tags=["unetjax", "u-net", "segmentation", "2d", "onnx"],
      attachments=[v0_5.FileDescr(source=Path(folder, "unetjax.json"))],
      inputs=inputs, outputs=outputs,
      weights=v0_5.WeightsDescr(onnx=v0_5.OnnxWeightsDescr(
          source=Path(folder, "model.onnx"), opset_version=17)))
