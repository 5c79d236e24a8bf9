"""Overlap-tile prediction: equals one whole-image pass; the CLI on files."""
import functools
import os
import shutil

import numpy as np
import pytest
import tifffile
from flax import nnx
from PIL import Image

from unetjax.data import DataInfo, image_io
from unetjax.inference import segment as segment_lib
from unetjax.inference import tiling
from unetjax.models.unet import UNet
from unetjax.runtime.errors import CheckpointError, DataError
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
  tiled = segment_lib.Segmenter(model, TASK, 1, tile_size=64).logits(image)
  np.testing.assert_allclose(tiled, np.asarray(model(image[None]))[0],
                             atol=1e-5)


def test_valid_model_in_many_tiles_equals_a_whole_mirrored_image_pass():
  model = _model("VALID")
  margin = (44 - model.output_size(44)) // 2  # 18 for depth 2
  image = np.random.default_rng(1).random((28, 36, 1)).astype(np.float32)
  whole = model(np.pad(image, ((margin,) * 2, (margin,) * 2, (0, 0)),
                       mode="reflect")[None])
  segment = segment_lib.Segmenter(model, TASK, 1, tile_size=48, batch_size=4)
  assert len(segment.plan(28).starts) > 1  # really tiled
  np.testing.assert_allclose(segment.logits(image), np.asarray(whole)[0],
                             atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (13, 7), (3, 200)])
def test_any_size_gives_a_probability_per_pixel(shape):
  segment = segment_lib.Segmenter(_model("VALID"), TASK, 1, tile_size=48,
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
  written = segment_lib.predict_files(
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
    segment_lib.predict_files(trained_workdir, str(tmp_path / "*.jpg"), str(out))
  with pytest.raises(DataError, match="broken.png: not an image"):
    segment_lib.predict_files(trained_workdir, str(tmp_path / "*.png"), str(out))
  untrained = tmp_path / "untrained"
  untrained.mkdir()
  shutil.copy(os.path.join(trained_workdir, "config.json"), untrained)
  with pytest.raises(CheckpointError, match="no checkpoint"):
    segment_lib.predict_files(str(untrained), str(good), str(out))
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
  run = functools.partial(segment_lib.predict_files, trained_workdir, str(folder),
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


@pytest.mark.parametrize("padding,shape", [("SAME", (40, 40)),
                                           ("SAME", (8, 40)),
                                           ("VALID", (28, 36))])
def test_tta_in_one_program_equals_averaging_the_views_on_the_host(padding,
                                                                   shape):
  model = _model(padding)
  image = np.random.default_rng(4).random(shape + (1,)).astype(np.float32)
  plain = segment_lib.Segmenter(model, TASK, 1, tile_size=32 if padding == "SAME"
                            else 48, batch_size=2)
  tta = segment_lib.Segmenter(model, TASK, 1, tile_size=32 if padding == "SAME"
                          else 48, batch_size=2, tta=True)
  rows, cols = plain.plan(shape[0]), plain.plan(shape[1])
  if shape == (8, 40):
    assert (rows.tile_in, cols.tile_in) == (8, 32)  # non-square tiles
  on_host = tiling.infer(
      image, tiling.dihedral_average(lambda t: np.asarray(
          plain.predict_tiles(t))), rows, cols, batch_size=2,
      blend=plain.blend)
  np.testing.assert_allclose(tta.logits(image), on_host, atol=1e-5)


def test_stream_of_images_of_several_sizes_equals_whole_image_passes():
  model = _model("VALID")
  margin = (44 - model.output_size(44)) // 2
  rng = np.random.default_rng(5)
  images = [rng.random(s + (1,)).astype(np.float32)
            for s in ((28, 36), (28, 36), (12, 16), (28, 36))]
  segment = segment_lib.Segmenter(model, TASK, 1, tile_size=48, batch_size=3)
  for image, logits in zip(images, segment.logits_stream(iter(images)),
                           strict=True):
    whole = model(np.pad(image, ((margin,) * 2, (margin,) * 2, (0, 0)),
                         mode="reflect")[None])
    np.testing.assert_allclose(logits, np.asarray(whole)[0], atol=1e-5)


def test_a_stack_is_read_and_written_page_by_page(tmp_path, monkeypatch):
  rng = np.random.default_rng(6)
  pages = (rng.random((12, 24, 20)) * 255).astype(np.uint8)
  path = str(tmp_path / "stack.tif")
  tifffile.imwrite(path, pages, photometric="minisblack")
  read = []
  original = tifffile.TiffFile.asarray

  def counting(self, *args, **kwargs):
    read.append(kwargs.get("key"))
    return original(self, *args, **kwargs)

  monkeypatch.setattr(tifffile.TiffFile, "asarray", counting)
  segment = segment_lib.Segmenter(_model("SAME"), TASK, 1, tile_size=32,
                              batch_size=2)
  stream = segment.stream(image_io.iter_stack(path))
  first = next(stream)
  assert len(read) <= 5 and read[0] == 0  # 2 batches of 1-tile pages ahead
  expected = [segment(page[..., None].astype(np.float32) / 255)
              for page in pages]
  np.testing.assert_allclose(first, expected[0], atol=1e-6)
  written = segment_lib.segment_files(segment, {path: (12, 1)},
                                  str(tmp_path / "out"), ["mask", "prob"])
  assert [os.path.basename(p) for p in written] == ["stack_mask.tif",
                                                    "stack_prob.tif"]
  masks = tifffile.imread(tmp_path / "out" / "stack_mask.tif")
  np.testing.assert_array_equal(masks, np.stack(
      [(e > 0.5).astype(np.uint8) for e in expected]))
  assert not [p for p in os.listdir(tmp_path / "out") if ".tmp" in p]
  from skimage.measure import label  # pylint: disable=g-import-not-at-top
  written = segment_lib.segment_files(
      segment, {path: (12, 1)}, str(tmp_path / "objects"),
      ["mask", "instances"], to_instances=lambda p: label(p > 0.5))
  ids = tifffile.imread(tmp_path / "objects" / "stack_instances.tif")
  assert ids.dtype == np.uint16 and ids.shape == (12, 24, 20)
  np.testing.assert_array_equal(ids, np.stack([label(e > 0.5)
                                               for e in expected]))


def test_cli_shows_no_orbax_info_or_read_only_lines(trained_workdir,
                                                    tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  from conftest import REPO  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "a.png")
  done = subprocess.run(
      [sys.executable, "-m", "unetjax.predict", "--workdir", trained_workdir,
       "--checkpoint", "latest", "--input", str(tmp_path / "a.png"),
       "--output", str(tmp_path / "out"), "--tile_size", "16"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "Wrote 1 files" in done.stdout
  orbax = [line for line in done.stderr.splitlines() if any(
      name in line for name in ("checkpoint_manager.py", "checkpointer.py",
                                "checkpoint_handler.py"))]
  assert not orbax, orbax[:3]


@pytest.mark.parametrize("shape,photometric", [
    ((3, 9, 10), "minisblack"), ((4, 9, 10), None), ((5, 9, 10), None),
    ((1, 9, 10), None), ((2, 9, 10, 3), "rgb")])
def test_page_by_page_reading_equals_reading_the_whole_stack(
    tmp_path, shape, photometric):
  path = str(tmp_path / "s.tif")
  tifffile.imwrite(path, (np.random.default_rng(7).random(shape) * 255)
                   .astype(np.uint8), photometric=photometric)
  whole = image_io.read_stack(path)
  assert image_io.stack_shape(path) == whole.shape
  np.testing.assert_array_equal(np.stack(list(image_io.iter_stack(path))),
                                whole)


def test_objects_that_do_not_fit_a_png_leave_none_of_the_inputs_outputs(
    tmp_path):
  """More than 65,535 objects for a PNG input: refused before the mask,
  the overlay or the ids of that input are written (the image before it
  keeps its files)."""
  rng = np.random.default_rng(3)
  paths = {}
  for name in ("a", "b"):
    path = str(tmp_path / f"{name}.png")
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(path)
    paths[path] = (1, 1)
  segment = segment_lib.Segmenter(_model("SAME"), TASK, 1, tile_size=32,
                                  batch_size=2)

  def too_many(prediction):
    ids = np.zeros(prediction.shape[:2], np.int64)
    ids[0, 0] = 1 if too_many.calls == 0 else 70_000
    too_many.calls += 1
    return ids
  too_many.calls = 0
  out = tmp_path / "out"
  with pytest.raises(DataError, match=r"b_instances.png: 70000 objects do "
                     "not fit a 16-bit PNG; give the input as a TIFF"):
    segment_lib.segment_files(segment, paths, str(out),
                              ["mask", "overlay", "instances"],
                              to_instances=too_many)
  assert sorted(os.listdir(out)) == ["a_instances.png", "a_mask.png",
                                     "a_overlay.png"]
