"""unetjax-export and unetjax-predict --model: the exported model computes
what the JAX model computes, and bad requests write nothing."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.conftest import REPO
from unetjax.models.unet import UNet
from unetjax.runtime.errors import CheckpointError, ConfigError, WorkdirError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
# pylint: disable=g-import-not-at-top,wrong-import-position
from unetjax.formats import exporter, onnx_graph


def _randomize(model: UNet, seed: int = 0) -> UNet:
  """BatchNorm statistics, scales and every bias random (kernels keep their
  initialisation, so the outputs stay unsaturated), so a wrong layout,
  order or epsilon shows; then inference mode."""
  rng = np.random.default_rng(seed)
  state = nnx.state(model)
  flat = dict(nnx.to_flat_state(state))
  for path, variable in flat.items():
    shape = variable[...].shape
    if path[-1] == "kernel" and path[-2] == "upsample":
      continue  # FCN's bilinear initialisation, not a BatchNorm statistic
    if path[-1] == "var":
      value = rng.uniform(0.5, 2.0, shape)
    elif path[-1] == "mean":
      value = rng.normal(0, 0.5, shape)
    elif path[-1] == "kernel":
      continue
    else:
      value = rng.normal(0, 0.4, shape) + (path[-1] == "scale")
    variable.set_value(jax.numpy.asarray(value, np.float32))
  nnx.update(model, state)
  model.eval()
  return model


def _onnx_outputs(proto, images: np.ndarray) -> np.ndarray:
  session = ort.InferenceSession(proto.SerializeToString(),
                                 providers=["CPUExecutionProvider"])
  out = session.run(None, {"input": images.transpose(0, 3, 1, 2)})[0]
  return out.transpose(0, 2, 3, 1)


MODELS = {
    # the architecture of configs/default.py: depth 3, 16 features, BN
    "default_batchnorm": (dict(depth=3, features=16, batchnorm=True), 3,
                          "softmax"),
    "dilated_addition": (dict(depth=2, features=(4, 6, 8), batchnorm=True,
                              dilate=True, dilate_rate=2, dilate_depth=3),
                         1, "sigmoid"),
    "dilated_last_only_bilinear_silu": (
        dict(depth=2, features=4, dilate=True, addition=False,
             upsampling="bilinear", activation="silu"), 2, "softmax"),
    "valid_padding": (dict(depth=2, features=4, padding="VALID",
                           batchnorm=True), 3, "softmax"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_matches_jax_at_three_sizes(name):
  kwargs, outputs, head = MODELS[name]
  model = _randomize(UNet(in_channels=2, num_outputs=outputs,
                          rngs=nnx.Rngs(0), **kwargs))
  proto = onnx_graph.unet_graph(model, head, in_channels=2)
  assert proto.opset_import[0].version == 17
  dims = proto.graph.input[0].type.tensor_type.shape.dim
  assert [d.dim_param or d.dim_value for d in dims] == [
      "batch", 2, "height", "width"]
  sizes = ([(60, 60), (76, 92), (108, 60)] if kwargs.get("padding") == "VALID"
           else [(32, 32), (48, 80), (96, 16)])
  activation = jax.nn.sigmoid if head == "sigmoid" else jax.nn.softmax
  for height, width in sizes:
    images = np.random.default_rng(height).uniform(
        0, 1, (2, height, width, 2)).astype(np.float32)
    expected = np.asarray(activation(model(images)))
    got = _onnx_outputs(proto, images)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4, (height, width)
    assert expected.std() > 0.01  # outputs that differ between pixels


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_fcn32_onnx_matches_jax_at_three_sizes(upsampling):
  from unetjax.models.fcn import FCN32  # pylint: disable=g-import-not-at-top
  model = _randomize(FCN32(in_channels=3, num_outputs=3, width=4,
                           upsampling=upsampling, rngs=nnx.Rngs(0)))
  proto = onnx_graph.model_graph(model, "softmax", in_channels=3)
  for height, width in ((32, 32), (64, 96), (128, 64)):
    images = np.random.default_rng(width).uniform(
        0, 1, (2, height, width, 3)).astype(np.float32)
    expected = np.asarray(jax.nn.softmax(model(images)))
    got = _onnx_outputs(proto, images)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4, (height, width)
    assert expected.std() > 0.01


def test_unsupported_models_and_tasks_get_one_line():
  from unetjax.models.cnn import CNN  # pylint: disable=g-import-not-at-top
  cnn = CNN(in_channels=1, num_outputs=10, image_size=28, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="model CNN cannot be exported"):
    onnx_graph.check_exportable(cnn, "softmax")
  gelu = UNet(in_channels=1, num_outputs=1, depth=1, features=2,
              activation="gelu", rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="'gelu' has no ONNX"):
    onnx_graph.check_exportable(gelu, "sigmoid")
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"task": {"name": "classification"}})
  with pytest.raises(ConfigError, match="task.name='classification' cannot"):
    exporter.output_head(config)
  config.task = {"name": "instances", "target": "three_class"}
  assert exporter.output_head(config) == "softmax"


def test_bad_requests_write_nothing(trained_workdir, tmp_path):
  no_checkpoint = tmp_path / "untrained"
  no_checkpoint.mkdir()
  with pytest.raises(CheckpointError, match="holds no checkpoint"):
    exporter.export(str(no_checkpoint), str(tmp_path / "a"), fmt="onnx")
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "keep.txt").write_text("mine")
  with pytest.raises(WorkdirError, match="exists already; pass --overwrite"):
    exporter.export(trained_workdir, str(existing), fmt="onnx")
  with pytest.raises(ConfigError, match="--format='tflite'"):
    exporter.export(trained_workdir, str(tmp_path / "b"), fmt="tflite")
  assert sorted(os.listdir(tmp_path)) == ["existing", "untrained"]
  assert (existing / "keep.txt").read_text() == "mine"


def test_cli_refuses_an_existing_output_in_one_line(trained_workdir,
                                                    tmp_path):
  (tmp_path / "out").mkdir()
  done = subprocess.run(
      [sys.executable, "-m", "unetjax.export", "--workdir", trained_workdir,
       "--out", str(tmp_path / "out"), "--format", "onnx"],
      capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1].startswith(
      f"error: --out={tmp_path / 'out'} exists already")
  assert "Traceback" not in done.stderr
  assert os.listdir(tmp_path / "out") == []


def test_stablehlo_round_trip(trained_workdir, tmp_path):
  out = tmp_path / "hlo"
  exporter.export(trained_workdir, str(out), fmt="stablehlo")
  exported = jax.export.deserialize(
      bytearray((out / "model.stablehlo").read_bytes()))
  from unetjax.inference import trained  # pylint: disable=g-import-not-at-top
  run = trained.load(trained_workdir, "best")
  model, _ = nnx.merge(run.graphdef, run.state)
  model.eval()
  for size in ((16, 16), (24, 40)):
    images = np.random.default_rng(1).uniform(
        0, 1, (3, *size, 1)).astype(np.float32)
    expected = jax.nn.sigmoid(model(images))
    np.testing.assert_allclose(exported.call(images), expected, atol=1e-6)


def _predict(tmp_path, source_flag, source, name, *extra):
  out = tmp_path / name
  done = subprocess.run(
      [sys.executable, "-m", "unetjax.predict", source_flag, source,
       "--input", str(tmp_path / "in"), "--output", str(out),
       "--probabilities", *extra],
      capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  images = sorted(os.listdir(tmp_path / "in"))
  if len(images) > 1:  # not a terminal: a line per image, no bar
    assert done.stdout.splitlines()[:len(images)] == [
        f"[{i + 1}/{len(images)}] {name}" for i, name in enumerate(images)]
  return {f: np.asarray(Image.open(out / f)).astype(int)
          for f in sorted(os.listdir(out))}


def test_predict_from_an_export_equals_predict_from_the_workdir(
    trained_workdir, tmp_path):
  """export -> predict --model (folder and bioimage.io zip) gives the masks
  and probability maps predict --workdir gives."""
  (tmp_path / "in").mkdir()
  rng = np.random.default_rng(0)
  for name, shape in (("a", (16, 16)), ("b", (40, 24))):
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        tmp_path / "in" / f"{name}.png")
  exporter.export(trained_workdir, str(tmp_path / "onnx"), fmt="onnx")
  from_workdir = _predict(tmp_path, "--workdir", trained_workdir, "w",
                          "--tile_size", "64")
  from_onnx = _predict(tmp_path, "--model", str(tmp_path / "onnx"), "m",
                       "--tile_size", "64")
  assert sorted(from_workdir) == ["a_mask.png", "a_prob.png", "b_mask.png",
                                  "b_prob.png"]
  assert from_onnx.keys() == from_workdir.keys()
  for key, expected in from_workdir.items():
    assert expected.max() > expected.min() or key.endswith("mask.png")
    if key.endswith("mask.png"):
      np.testing.assert_array_equal(from_onnx[key], expected, err_msg=key)
    else:  # onnxruntime's float32 rounding may flip a grey level
      assert np.abs(from_onnx[key] - expected).max() <= 1, key
  # Several tiles: the export blends probabilities, the workdir logits.
  tiled_w = _predict(tmp_path, "--workdir", trained_workdir, "tw",
                     "--tile_size", "16")
  tiled_m = _predict(tmp_path, "--model", str(tmp_path / "onnx"), "tm",
                     "--tile_size", "16")
  for key, expected in tiled_w.items():
    assert np.abs(tiled_m[key] - expected).max() <= (
        1 if key.endswith("mask.png") else 3), key
    if key.endswith("mask.png"):
      assert (tiled_m[key] != expected).mean() < 0.01


def test_bioimageio_package_passes_test_model_and_predicts(trained_workdir,
                                                            tmp_path):
  core = pytest.importorskip("bioimageio.core")
  out = tmp_path / "zoo"
  files = exporter.export(trained_workdir, str(out), fmt="bioimageio",
                          name="tiny cells")
  names = sorted(os.path.basename(f) for f in files)
  assert names == ["README.md", "cover.png", "model.onnx", "test_input.npy",
                   "test_output.npy", "tiny_cells.zip", "unetjax.json"]
  summary = core.test_model(str(out / "tiny_cells.zip"))
  assert summary.status == "passed", summary.format()
  docs = (out / "README.md").read_text()
  test_dice = json.loads(open(os.path.join(
      trained_workdir, "metrics.json")).read())["test"]["dice"]
  assert f"| dice | {test_dice:.4f} |" in docs
  assert "probabilities (sigmoid) of the foreground" in docs
  meta = json.loads((out / "unetjax.json").read_text())
  assert meta["normalize"] == {"mode": "scale"}
  assert meta["head"] == "sigmoid"
  raw = np.load(out / "test_input.npy")
  assert raw.shape == (1, 1, 256, 256) and raw.max() > 1  # 0..255, raw
  (tmp_path / "in").mkdir()
  Image.fromarray(raw[0, 0].astype(np.uint8)).save(tmp_path / "in" / "t.png")
  from_zip = _predict(tmp_path, "--model", str(out / "tiny_cells.zip"), "z")
  expected = np.load(out / "test_output.npy")[0, 0]
  assert np.abs(from_zip["t_prob.png"] - np.round(expected * 255)).max() <= 1


_ONE_OF = ("error: give one of --workdir (a training run) and --model (an "
           "unetjax-export folder or bioimage.io zip, or a shipped model: "
           "nuclei)")


@pytest.mark.parametrize("flags,message", [
    ([], _ONE_OF), (["--workdir", "w", "--model", "m"], _ONE_OF),
    (["--model", "nuclei", "--checkpoint", "5"],
     "error: --checkpoint picks a checkpoint of --workdir; --model holds "
     "one model: drop --checkpoint")])
def test_predict_takes_one_of_workdir_and_model(flags, message, tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "unetjax.predict", *flags, "--input", "x.png",
       "--output", str(tmp_path / "out")], capture_output=True, text=True,
      cwd=REPO, timeout=300, check=False)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1] == message
  assert not (tmp_path / "out").exists()


def test_predict_model_that_is_not_an_export_is_one_line(tmp_path):
  from unetjax.formats import exported  # pylint: disable=g-import-not-at-top
  from unetjax.runtime.errors import DataError  # pylint: disable=g-import-not-at-top
  (tmp_path / "folder").mkdir()
  with pytest.raises(DataError, match="no unetjax.json there"):
    exported.read_export(str(tmp_path / "folder"))
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(DataError, match="neither an export folder nor a zip, "
                     r"nor a shipped model \(shipped: nuclei\)"):
    exported.read_export(str(tmp_path / "notes.txt"))


def test_percentile_normalisation_is_the_packages_scale_range(
    trained_workdir, tmp_path):
  """A run whose experiment.json records percentile normalisation exports
  it as the spec's scale_range; test_model passes only if the test output
  (computed here with numpy) equals what bioimageio.core's preprocessing
  gives."""
  pytest.importorskip("bioimageio.core")
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "wd"
  shutil.copytree(trained_workdir, workdir)
  facts = json.loads((workdir / "experiment.json").read_text())
  facts["input"] = {"normalize": "percentile", "percentiles": [2.0, 99.5],
                    "channels": facts.get("input", {}).get("channels", 1)}
  (workdir / "experiment.json").write_text(json.dumps(facts))
  with pytest.raises(ConfigError, match=r"package's name \('pct'\).*--name"):
    exporter.export(str(workdir), str(tmp_path / "zoo"), fmt="bioimageio",
                    name="pct")
  assert not (tmp_path / "zoo").exists()
  exporter.export(str(workdir), str(tmp_path / "zoo"), fmt="bioimageio")
  rdf = __import__("zipfile").ZipFile(tmp_path / "zoo" / "unetjax_wd.zip").read(
      "rdf.yaml").decode()
  assert "id: scale_range" in rdf and "min_percentile: 2.0" in rdf
  assert "max_percentile: 99.5" in rdf
  meta = json.loads((tmp_path / "zoo" / "unetjax.json").read_text())
  assert meta["normalize"] == {"mode": "percentile", "low": 2.0,
                               "high": 99.5}
  facts["input"] = {"normalize": "zscore", "percentiles": [1.0, 99.8]}
  (workdir / "experiment.json").write_text(json.dumps(facts))
  with pytest.raises(WorkdirError, match="data.normalize='zscore'"):
    exporter.export(str(workdir), str(tmp_path / "zoo2"), fmt="onnx")
  assert not (tmp_path / "zoo2").exists()


def test_a_shipped_model_exports_without_a_workdir(trained_workdir, tmp_path,
                                                   monkeypatch):
  """`unetjax-export --model NAME`: the shipped weights (float16, restored
  as float32) as ONNX, computing what the shipped JAX model computes, with
  the run's normalisation and held-out scores carried over."""
  from unetjax.inference import pretrained  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(pretrained, "FOLDER", str(tmp_path / "weights"))
  pretrained.save(trained_workdir, pretrained.folder("nuclei"))
  out = tmp_path / "onnx"
  exporter.export(None, str(out), fmt="onnx", shipped="nuclei")
  meta = json.loads((out / "unetjax.json").read_text())
  assert meta["normalize"] == {"mode": "scale"} and meta["head"] == "sigmoid"
  model = pretrained.load("nuclei").model()
  model.eval()
  import onnx  # pylint: disable=g-import-not-at-top
  proto = onnx.load(str(out / "model.onnx"))
  images = np.random.default_rng(2).uniform(0, 1, (2, 24, 40, 1)).astype(
      np.float32)
  np.testing.assert_allclose(_onnx_outputs(proto, images),
                             jax.nn.sigmoid(model(images)), atol=1e-4)
  with pytest.raises(ConfigError, match="no such shipped model"):
    exporter.export(None, str(tmp_path / "x"), fmt="onnx", shipped="cells")
