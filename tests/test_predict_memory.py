"""Predict's memory follows the tiles, not the image, and its outputs are
those of the whole-image computation it replaced, bit for bit.

The reference here (`_whole_image_*`) is the earlier predict, kept as the
specification: the image converted to float32 and normalised whole,
mirror-padded whole, every tile's weighted output summed into one
image-sized canvas and divided by the summed weights, the task's predict
on the whole map.
"""
import os
import tracemalloc

import numpy as np
import pytest
import tifffile
from flax import nnx
from PIL import Image

from unetjax.data import DataInfo, image_io, image_write, normalize
from unetjax.inference import outputs as outputs_lib
from unetjax.inference import segment as segment_lib
from unetjax.inference import tiling
from unetjax.models.unet import UNet
from unetjax.tasks.instances import InstanceSegmentation
from unetjax.tasks.multiclass import MulticlassSegmentation
from unetjax.tasks.segmentation import BinarySegmentation

BINARY = BinarySegmentation(info=DataInfo("t", 2, 1, ("bg", "fg")))
PERCENTILE = {"normalize": "percentile", "percentiles": [1.0, 99.8]}


# --- percentiles from a histogram ------------------------------------------


@pytest.mark.parametrize("dtype,divisor", [(np.uint8, 255.0),
                                           (np.uint16, 65535.0)])
def test_histogram_percentiles_equal_numpys_on_the_floats_bit_for_bit(
    dtype, divisor):
  """What training computes (`np.percentile` of the [0, 1] float32 image)
  and what predict computes from the stored values' histogram."""
  rng = np.random.default_rng(0)
  top = np.iinfo(dtype).max
  cases = [((1, 1, 1), [1.0, 99.8]), ((3, 200, 1), [0.0, 100.0]),
           ((37, 41, 3), [1.0, 99.8]), ((600, 501, 1), [0.3, 99.99]),
           ((250, 301, 3), [2.0, 98.0])]
  cases += [((int(rng.integers(1, 60)), int(rng.integers(1, 60)),
              int(rng.choice([1, 3]))),
             sorted(rng.uniform(0, 100, 2).tolist())) for _ in range(200)]
  for shape, percentiles in cases:
    image = np.minimum(rng.gamma(2.0, top / 8, shape), top).astype(dtype)
    floats = (image.astype(np.float32) / np.float32(divisor)).reshape(
        -1, shape[-1])
    expected = np.percentile(floats, percentiles, axis=0).astype(np.float32)
    chosen = {"normalize": "percentile", "percentiles": percentiles}
    got = normalize.stats(image, chosen, divisor)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected, err_msg=f"{shape} "
                                  f"{percentiles}")
  # training's uint8 images (the cache) take the same path
  eight = rng.integers(0, 256, (30, 40, 3), np.uint8)
  np.testing.assert_array_equal(
      normalize.stats(eight, PERCENTILE), np.percentile(
          (eight / np.float32(255)).reshape(-1, 3), [1.0, 99.8],
          axis=0).astype(np.float32))


def test_histogram_counts_in_blocks_as_one_bincount():
  image = np.random.default_rng(1).integers(0, 300, (53, 17, 2), np.uint16)
  counts = normalize.histogram(image, pixels=40)  # 2 rows a block
  assert counts.shape == (2, int(image.max()) + 1)
  for c in range(2):
    np.testing.assert_array_equal(counts[c],
                                  np.bincount(image[..., c].ravel()))


def test_a_tile_normalised_alone_equals_that_part_of_the_whole_image():
  image = np.random.default_rng(2).integers(0, 65536, (40, 50, 1), np.uint16)
  stats = normalize.stats(image, PERCENTILE, 65535.0)
  whole = normalize.apply(image_io.to_float(image, "x"), PERCENTILE)
  tile = normalize.apply(image[5:21, 30:50], PERCENTILE, stats, 65535.0)
  np.testing.assert_array_equal(tile, whole[5:21, 30:50])


def test_luminance_in_row_blocks_equals_the_one_shot_conversion():
  rng = np.random.default_rng(3)
  for array in (rng.integers(0, 256, (700, 700, 3), np.uint8),  # 2 blocks
                rng.integers(0, 65536, (9, 11, 3), np.uint16),
                rng.random((13, 5, 3)).astype(np.float32)):
    luminance = array.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if np.issubdtype(array.dtype, np.integer):
      luminance = np.round(luminance).astype(array.dtype)
    got = image_io.convert_channels(array, 1, "x")
    assert got.dtype == array.dtype
    np.testing.assert_array_equal(got, luminance[..., None].astype(
        array.dtype))


# --- tiles cut without padding, stitched in bands --------------------------


def test_mirror_indices_are_what_np_pad_reflect_puts_there():
  for length in range(1, 20):
    axis = np.arange(length)
    for before in range(0, 45, 4):
      for after in range(0, 45, 7):
        padded = np.pad(axis, (before, after), mode="reflect")
        np.testing.assert_array_equal(axis[tiling.mirror_indices(
            -before, length + before + after, length)], padded)


def _whole_image_stream(images, predict, plan, batch_size, blend):
  """The earlier tiling and stitching: each image padded whole, tiles of
  consecutive images batched together (a batch filled up with copies of
  its first tile), and one image-sized canvas per image."""
  jobs = []  # (image number, origin, tile)
  for number, image in enumerate(images):
    rows, cols = plan(image)
    padded = np.pad(image, ((rows.margin, rows.pad_after),
                            (cols.margin, cols.pad_after), (0, 0)),
                    mode="reflect")
    jobs += [(number, (y, x), padded[y:y + rows.tile_in, x:x + cols.tile_in])
             for y in rows.starts for x in cols.starts]
  outputs, batch = [], []

  def flush():
    tiles = [tile for *_, tile in batch]
    tiles += tiles[:1] * (batch_size - len(tiles))
    outputs.extend(np.asarray(predict(np.stack(tiles)))[:len(batch)])
    batch.clear()

  for job in jobs:
    if batch and job[2].shape != batch[-1][2].shape:
      flush()
    batch.append(job)
    if len(batch) == batch_size:
      flush()
  if batch:
    flush()
  results = []
  for number, image in enumerate(images):
    rows, cols = plan(image)
    window = (np.outer(tiling.window(rows.tile_out),
                       tiling.window(cols.tile_out)) if blend else None)
    total = None
    for (n, (y, x), _), output in zip(jobs, outputs):
      if n != number:
        continue
      if total is None:
        total = np.zeros((rows.covered, cols.covered) + output.shape[2:],
                         np.result_type(output.dtype, np.float32))
        window = None if window is None else window.astype(total.dtype)
      if window is not None:
        output = output * window.reshape(window.shape + (1,) * (
            output.ndim - 2))
      total[y:y + rows.tile_out, x:x + cols.tile_out] += output
    summed = np.outer(tiling.axis_weight(rows, blend)[:rows.length],
                      tiling.axis_weight(cols, blend)[:cols.length])
    total = total[:rows.length, :cols.length]
    total /= summed.astype(total.dtype).reshape(summed.shape + (1,) * (
        total.ndim - 2))
    results.append(total)
  return results


def _nonlinear(tiles):
  """A stand-in model: VALID-like (margin 3), two outputs per pixel."""
  inner = tiles[:, 3:-3, 3:-3, :1]
  return np.concatenate([np.sin(7 * inner) + inner ** 2,
                         np.cos(5 * inner)], -1).astype(np.float32)


@pytest.mark.parametrize("shape,tile,margin,blend", [
    ((70, 90), 16, 0, True), ((1, 1), 16, 0, True), ((5, 200), 32, 0, True),
    ((64, 64), 64, 0, True), ((70, 45), 16, 3, False), ((3, 4), 16, 3, False)])
def test_bands_are_the_rows_of_the_whole_image_result_bit_for_bit(
    shape, tile, margin, blend):
  image = np.random.default_rng(4).random(shape + (1,)).astype(np.float32)
  tile_out = tile - 2 * margin
  overlap = tile_out // 4 if blend else 0
  rows = tiling.plan_axis(shape[0], tile, tile_out, align=4, overlap=overlap)
  cols = tiling.plan_axis(shape[1], tile, tile_out, align=4, overlap=overlap)
  predict = ((lambda t: _nonlinear(np.pad(t, ((0, 0), (3, 3), (3, 3), (0, 0)))))
             if margin == 0 else _nonlinear)
  expected = _whole_image_stream([image], predict, lambda _: (rows, cols),
                                 3, blend)[0]
  bands = list(tiling.infer_bands([image, image], predict,
                                  lambda _: (rows, cols), batch_size=3,
                                  blend=blend))
  assert [b.index for b in bands] == sorted(b.index for b in bands)
  for index in (0, 1):
    mine = [b for b in bands if b.index == index]
    assert [b.top for b in mine] == [s for s in rows.starts if s < shape[0]]
    assert mine[-1].last and not any(b.last for b in mine[:-1])
    assert max(len(b.values) for b in mine) <= rows.tile_out
    np.testing.assert_array_equal(
        np.concatenate([b.values for b in mine]), expected)


def test_tiles_cut_from_stored_values_equal_tiles_of_the_padded_image():
  image = np.random.default_rng(5).integers(0, 256, (30, 7, 3), np.uint8)
  rows = tiling.plan_axis(30, 20, 8, align=4)
  cols = tiling.plan_axis(7, 20, 8, align=4)
  padded = np.pad(image, ((rows.margin, rows.pad_after),
                          (cols.margin, cols.pad_after), (0, 0)),
                  mode="reflect")
  for y in rows.starts:
    for x in cols.starts:
      np.testing.assert_array_equal(
          tiling.cut(image, rows, cols, (y, x)),
          padded[y:y + rows.tile_in, x:x + cols.tile_in])


def test_stitching_a_large_image_holds_no_image_sized_array():
  """numpy's allocations (tracemalloc sees them) while a 1500x1500 uint8
  image is tiled, normalised tile by tile and stitched, its bands dropped:
  under half a float32 copy of the image (9 MB); the earlier stitching
  held several (float image, padded copy, canvas, float64 weights)."""
  image = np.random.default_rng(6).integers(0, 256, (1500, 1500, 1),
                                            np.uint8)
  segment = segment_lib.Segmenter(_model("SAME"), BINARY, 1, tile_size=64,
                                  normalization=PERCENTILE)
  rows = tiling.plan_axis(1500, 64, 64, align=4, overlap=16)

  def predict(tiles):
    return tiles[..., :1] * 2.0

  tracemalloc.start()
  try:
    source = segment.source(image, 255.0)  # percentiles: a histogram
    count = sum(1 for _ in tiling.infer_bands(
        [source], predict, lambda _: (rows, rows), batch_size=8, blend=True))
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert count == len(rows.starts)
  assert peak < image.size * 4 / 2, peak


# --- predict's files: the earlier outputs, bit for bit ---------------------


def _model(padding, outputs=1, seed=0):
  model = UNet(in_channels=1, num_outputs=outputs, depth=2, features=4,
               padding=padding, batchnorm=True, rngs=nnx.Rngs(seed))
  model.eval()
  return model


def _whole_image_predictions(segment, pages):
  """The earlier predict of pages [H, W, C] in [0, 1], in one stream."""
  logits = _whole_image_stream(
      [normalize.apply(page, segment.normalization) for page in pages],
      segment.predict_tiles,
      lambda image: (segment.plan(image.shape[0]),
                     segment.plan(image.shape[1])),
      segment.batch_size, segment.blend)
  return [np.asarray(segment._predict(l)) for l in logits]  # pylint: disable=protected-access


def _pixels(path):
  return np.asarray(Image.open(path)) if path.endswith(".png") else \
      tifffile.imread(path)


@pytest.mark.parametrize("task,padding,normalization,outputs", [
    (BINARY, "SAME", PERCENTILE, 1), (BINARY, "VALID", None, 1),
    (MulticlassSegmentation(info=DataInfo("m", 3, 1, ("a", "b", "c"))),
     "SAME", PERCENTILE, 3),
    (InstanceSegmentation(info=DataInfo("x", 2, 1, ("bg", "n"),
                                        instances=True),
                          target="three_class"), "SAME", PERCENTILE, 3)])
def test_predict_files_equal_the_whole_image_computation(
    tmp_path, task, padding, normalization, outputs):
  """8- and 16-bit PNGs and a TIFF stack of several tiles each: masks,
  probability pixels, overlays and objects equal those of the whole-image
  computation, bit for bit."""
  from skimage.color import label2rgb  # pylint: disable=g-import-not-at-top

  from unetjax.instances import plots as instance_plots  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  inputs = tmp_path / "in"
  inputs.mkdir()
  Image.fromarray((rng.gamma(2, 30, (61, 83)).clip(0, 255)).astype(
      np.uint8)).save(inputs / "eight.png")
  Image.fromarray(rng.integers(0, 65536, (45, 40)).astype(np.uint16)).save(
      inputs / "sixteen.png")
  tifffile.imwrite(inputs / "stack.tif", rng.integers(
      0, 256, (2, 37, 50), np.uint8), photometric="minisblack")
  segment = segment_lib.Segmenter(
      _model(padding, outputs), task, 1, tile_size=32 if padding == "SAME"
      else 48, batch_size=3, normalization=normalization)
  to_instances = getattr(task, "to_instances", None)
  kinds = (["mask"] + ["prob"] * np.issubdtype(segment.prediction.dtype,
                                               np.floating)
           + ["instances"] * (to_instances is not None) + ["overlay"])
  paths = sorted(str(p) for p in inputs.iterdir())
  shapes = {p: segment_lib.input_shape(p) for p in paths}
  written = segment_lib.segment_files(segment, shapes, str(tmp_path / "out"),
                                      kinds, to_instances)
  assert len(written) == len(paths) * len(kinds)
  assert len(segment.plan(61).starts) > 1  # really tiled
  pages = [page for path in paths for page in (
      image_io.read_stack(path) if path.endswith(".tif")
      else image_io.read_image(path)[None])]
  predictions = iter(_whole_image_predictions(segment, pages))
  pages = iter(pages)

  def expected(kind, prediction, page):
    mask, prob = outputs_lib.mask_and_probability(prediction, task)
    if kind == "mask":
      return mask
    if kind == "prob":
      return image_write.image_pixels(prob)
    if kind == "instances":
      return to_instances(prediction)
    if to_instances is not None:
      return image_write.image_pixels(instance_plots.overlay(
          page, to_instances(prediction)))
    return image_write.image_pixels(label2rgb(
        mask, page[..., 0], bg_label=0, alpha=0.35, image_alpha=1.0))

  for path in paths:
    results = [(next(predictions), next(pages))
               for _ in range(shapes[path][0])]
    stem, suffix = os.path.splitext(os.path.basename(path))
    for kind in kinds:
      got = _pixels(str(tmp_path / "out" / f"{stem}_{kind}{suffix}"))
      want = np.stack([expected(kind, *r) for r in results])
      np.testing.assert_array_equal(got, want if len(want) > 1 else want[0],
                                    err_msg=f"{stem} {kind}")
      if kind == "mask":
        assert len(np.unique(got)) > 1  # a mask that can tell a difference


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("objects", [False, True])
def test_overlay_made_in_bands_equals_the_whole_picture(channels, objects):
  """Bands of 7 rows, labels of which most bands hold only some, objects
  whose outlines cross band edges: the colours and outlines are still the
  whole picture's (a label's colour is its rank among the labels
  present; an outline looks one pixel away)."""
  from skimage.color import label2rgb  # pylint: disable=g-import-not-at-top

  from unetjax.instances import plots as instance_plots  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(8)
  pixels = rng.integers(0, 256, (40, 9, channels), np.uint8)
  labels = np.zeros((40, 9), np.int32)
  labels[2:5] = 1
  labels[7:10, 2:6] = 5  # starts on a band's first row
  labels[11:14, 6:] = 9  # ends on a band's last row
  labels[13:15, 1:4] = 7  # across the edge of rows 13 and 14
  labels[20:22, 1] = 3
  labels[30:40, 4:] = 12  # to the bottom border
  labels[30] = 2
  page = image_io.to_float(pixels, "x")
  if objects:
    whole = instance_plots.overlay(page, labels)
  else:
    whole = label2rgb(labels, page[..., 0] if channels == 1 else page,
                      bg_label=0, alpha=0.35, image_alpha=1.0)
  got = outputs_lib.overlay_pixels(pixels, 255.0, labels, objects=objects,
                                   rows=7)
  np.testing.assert_array_equal(got, image_write.image_pixels(whole))


@pytest.mark.parametrize("mode,shape,dtype", [
    ("L", (23, 9), np.uint8), ("I;16", (23, 9), np.uint16),
    ("RGB", (23, 9, 3), np.uint8), ("RGBA", (23, 9, 4), np.uint8),
    ("LA", (23, 9, 2), np.uint8), ("1", (23, 9), bool)])
def test_a_pillow_image_read_in_blocks_of_rows_is_its_array(tmp_path, mode,
                                                           shape, dtype):
  rng = np.random.default_rng(9)
  values = rng.integers(0, 2 if dtype is bool else np.iinfo(dtype).max + 1,
                        shape)
  if mode == "LA":
    image = Image.fromarray(values.astype(np.uint8)[..., 0]).convert("LA")
  elif mode == "1":
    image = Image.fromarray(values.astype(bool))
  else:
    image = Image.fromarray(values.astype(dtype))
  image.save(tmp_path / "x.png")
  with Image.open(tmp_path / "x.png") as opened:
    opened.load()
    whole = np.asarray(opened)
    got = image_io.as_array(opened, rows=5)
  assert opened.mode == mode
  assert got.dtype == whole.dtype and got.shape == whole.shape
  np.testing.assert_array_equal(got, whole)


def test_predict_says_how_far_it_is_per_image_and_per_tile_batch(
    tmp_path, monkeypatch, capsys):
  """Without a terminal: a line per image and, while an image is tiled, a
  line of tile batches every `EVERY_SECONDS` (here every batch)."""
  from unetjax.runtime import console  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(console.PredictProgress, "EVERY_SECONDS", -1.0)
  rng = np.random.default_rng(10)
  for name in ("a", "b"):
    Image.fromarray(rng.integers(0, 256, (40, 40), np.uint8)).save(
        tmp_path / f"{name}.png")
  segment = segment_lib.Segmenter(_model("SAME"), BINARY, 1, tile_size=16,
                                  batch_size=4)
  paths = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
  capsys.readouterr()
  segment_lib.segment_files(segment, {p: (1, 1) for p in paths},
                            str(tmp_path / "out"), ["mask"])
  lines = capsys.readouterr().out.splitlines()
  tiles = len(segment.plan(40).starts) ** 2  # 9 tiles an image: 5 batches
  batches = [line for line in lines if "tile batches done" in line]
  assert batches[0] == "1 tile batches done (0/2 images)"
  assert len(batches) == -(-2 * tiles // 4)
  assert [line for line in lines if line.startswith("[")] == [
      "[1/2] a.png", "[2/2] b.png"]
  assert "predict_tiles" not in vars(segment)  # the counter is removed
