"""Overlap-tile prediction: equals one whole-image pass; the CLI on files."""
import functools
import os
import shutil

import numpy as np
import pytest
import tifffile
from flax import nnx
from PIL import Image

from unetjax import predict
from unetjax.datasets import DataInfo
from unetjax.errors import CheckpointError, DataError
from unetjax.models.unet import UNet
from unetjax.tasks.segmentation import BinarySegmentation

TASK = BinarySegmentation(info=DataInfo("t", 2, 1, ("bg", "fg")))


def _model(padding):
  model = UNet(in_channels=1, num_outputs=1, depth=2, features=4,
               padding=padding, batchnorm=True, rngs=nnx.Rngs(0))
  model.eval()
  return model


def test_same_model_in_one_tile_equals_a_whole_image_pass():
  model = _model("SAME")
  image = np.random.default_rng(0).random((24, 40, 1)).astype(np.float32)
  tiled = predict.Segmenter(model, TASK, 1, tile_size=64).logits(image)
  np.testing.assert_allclose(tiled, np.asarray(model(image[None]))[0],
                             atol=1e-5)


def test_valid_model_in_many_tiles_equals_a_whole_mirrored_image_pass():
  model = _model("VALID")
  margin = (44 - model.output_size(44)) // 2  # 18 for depth 2
  image = np.random.default_rng(1).random((28, 36, 1)).astype(np.float32)
  whole = model(np.pad(image, ((margin,) * 2, (margin,) * 2, (0, 0)),
                       mode="reflect")[None])
  segment = predict.Segmenter(model, TASK, 1, tile_size=48, batch_size=4)
  assert len(segment.plan(28).starts) > 1  # really tiled
  np.testing.assert_allclose(segment.logits(image), np.asarray(whole)[0],
                             atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (13, 7), (3, 200)])
def test_any_size_gives_a_probability_per_pixel(shape):
  segment = predict.Segmenter(_model("VALID"), TASK, 1, tile_size=48,
                              tta=True)
  probs = segment(np.full(shape + (1,), 0.5, np.float32))
  assert probs.shape == shape
  assert np.all((probs >= 0) & (probs <= 1))


def test_cli_writes_masks_for_png_and_tiff_stacks(trained_workdir, tmp_path):
  rng = np.random.default_rng(2)
  inputs = tmp_path / "in"
  inputs.mkdir()
  Image.fromarray((rng.random((37, 90)) * 255).astype(np.uint8)).save(
      inputs / "wide.png")
  tifffile.imwrite(inputs / "stack.tif",
                   (rng.random((3, 20, 21)) * 255).astype(np.uint8),
                   photometric="minisblack")
  written = predict.predict_files(
      trained_workdir, str(inputs / "*"), str(tmp_path / "out"),
      checkpoint="latest", tile_size=16, probabilities=True, overlay=True)
  assert sorted(os.path.basename(p) for p in written) == [
      "stack_mask.tif", "stack_overlay.tif", "stack_prob.tif",
      "wide_mask.png", "wide_overlay.png", "wide_prob.png"]
  mask = np.asarray(Image.open(tmp_path / "out" / "wide_mask.png"))
  assert mask.shape == (37, 90) and set(np.unique(mask)) <= {0, 1}
  assert tifffile.imread(tmp_path / "out" / "stack_mask.tif").shape == (
      3, 20, 21)


def test_bad_inputs_fail_before_anything_is_written(trained_workdir,
                                                    tmp_path):
  out = tmp_path / "out"
  good = tmp_path / "good.png"
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
  (tmp_path / "broken.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match="matches no file"):
    predict.predict_files(trained_workdir, str(tmp_path / "*.jpg"), str(out))
  with pytest.raises(DataError, match="broken.png: not an image"):
    predict.predict_files(trained_workdir, str(tmp_path / "*.png"), str(out))
  untrained = tmp_path / "untrained"
  untrained.mkdir()
  shutil.copy(os.path.join(trained_workdir, "config.json"), untrained)
  with pytest.raises(CheckpointError, match="no checkpoint"):
    predict.predict_files(str(untrained), str(good), str(out))
  assert not out.exists()


def test_outputs_never_replace_a_file_unless_asked_nor_become_inputs(
    trained_workdir, tmp_path, capsys):
  """--output is the input folder: the first run adds masks, the second is
  refused, --overwrite replaces only the masks and never reads them."""
  folder = tmp_path / "scans"
  folder.mkdir()
  for name in ("a", "b"):
    Image.fromarray(np.full((9, 11), 128, np.uint8)).save(folder / f"{name}.png")
  (folder / "notes.txt").write_text("not a picture")
  run = functools.partial(predict.predict_files, trained_workdir, str(folder),
                          str(folder), checkpoint="latest", tile_size=16)
  assert sorted(os.path.basename(p) for p in run()) == ["a_mask.png",
                                                        "b_mask.png"]
  stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
  with pytest.raises(DataError, match="already holds a_mask.png and 1 more "
                     "outputs; pass --overwrite"):
    run()
  assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
  capsys.readouterr()
  assert sorted(os.path.basename(p) for p in run(overwrite=True)) == [
      "a_mask.png", "b_mask.png"]  # not a_mask_mask.png
  assert "Not reading 2 file(s)" in capsys.readouterr().out
  assert sorted(p.name for p in folder.iterdir()) == [
      "a.png", "a_mask.png", "b.png", "b_mask.png", "notes.txt"]
  for name in ("a.png", "b.png", "notes.txt"):
    assert (folder / name).stat().st_mtime_ns == stamps[name]
