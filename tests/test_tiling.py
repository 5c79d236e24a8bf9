"""Overlap-tile geometry, checked with model-free `predict` functions."""
import numpy as np
import pytest
from scipy import ndimage

from unetjax.inference import tiling


def test_plan_axis_strides_by_aligned_steps_and_covers_the_image():
  plan = tiling.plan_axis(100, 32, 32, align=8, overlap=8)
  assert plan.starts == (0, 24, 48, 72)  # stride 32 - 8, last ends at 104
  assert (plan.margin, plan.pad_after, plan.covered) == (0, 4, 104)


def test_plan_axis_valid_tiles_abut_and_pad_by_the_margin():
  plan = tiling.plan_axis(10, 44, 8, align=4)  # margin 18
  assert plan.starts == (0, 8)
  assert (plan.margin, plan.pad_after) == (18, 24)  # 8 + 44 - 18 - 10


def _identity(tiles):
  return tiles[..., 0]


def _box3(tiles):
  """A 'VALID model': the 3x3 mean, output one pixel smaller each side."""
  return ndimage.uniform_filter(tiles[..., 0], size=(1, 3, 3))[:, 1:-1, 1:-1]


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (3, 500), (40, 40),
                                   (65, 33)])
def test_same_tiling_reassembles_the_image_exactly(shape):
  image = np.random.default_rng(0).random(shape + (1,))
  rows = tiling.plan_axis(shape[0], 16, 16, align=4, overlap=4)
  cols = tiling.plan_axis(shape[1], 16, 16, align=4, overlap=4)
  out = tiling.infer(image, _identity, rows, cols, batch_size=3, blend=True)
  np.testing.assert_allclose(out, image[..., 0], rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (9, 30), (2, 301)])
def test_valid_tiling_sees_mirrored_context_like_a_whole_image_filter(shape):
  image = np.random.default_rng(1).random(shape + (1,))
  rows = tiling.plan_axis(shape[0], 10, 8, align=2)
  cols = tiling.plan_axis(shape[1], 10, 8, align=2)
  out = tiling.infer(image, _box3, rows, cols, batch_size=4, blend=False)
  whole = ndimage.uniform_filter(image[..., 0], 3, mode="mirror")
  np.testing.assert_allclose(out, whole, rtol=1e-12)


def test_dihedral_average_keeps_an_equivariant_prediction():
  tiles = np.random.default_rng(2).random((2, 12, 12, 1))
  averaged = tiling.dihedral_average(_box3)(tiles)
  np.testing.assert_allclose(averaged, _box3(tiles), rtol=1e-12)


def test_dihedral_average_averages_a_directional_prediction():
  tiles = np.zeros((1, 4, 4, 1))
  tiles[0, 0, 0, 0] = 8.0  # a corner; the 8 transforms visit all 4 corners

  def top_row(batch):
    return np.where(np.arange(4)[None, :, None] == 0, batch[..., 0], 0.0)

  averaged = tiling.dihedral_average(top_row)(tiles)[0]
  assert averaged[0, 0] == pytest.approx(4.0)  # kept by 4 of the 8 views
  assert averaged.sum() == pytest.approx(4.0)


def test_axis_weight_is_the_summed_window_of_the_tiles():
  plan = tiling.plan_axis(100, 32, 32, align=8, overlap=8)
  counts = tiling.axis_weight(plan, blend=False)
  assert counts.shape == (104,)
  np.testing.assert_array_equal(counts[[0, 23, 24, 31, 32, 103]],
                                [1, 1, 2, 2, 1, 1])
  rows, cols = plan, tiling.plan_axis(40, 16, 16, align=4, overlap=4)
  weight = np.outer(tiling.window(32), tiling.window(16))
  naive = np.zeros((rows.covered, cols.covered))
  for y in rows.starts:
    for x in cols.starts:
      naive[y:y + 32, x:x + 16] += weight
  np.testing.assert_allclose(
      np.outer(tiling.axis_weight(rows, True), tiling.axis_weight(cols, True)),
      naive, rtol=1e-12)


def test_stream_shares_batches_across_images_and_equals_one_by_one():
  rng = np.random.default_rng(3)
  images = [rng.random((20, 20, 1)), rng.random((20, 20, 1)),
            rng.random((9, 30, 1)), rng.random((20, 20, 1))]
  calls = []

  def box3(tiles):
    calls.append(len(tiles))
    return _box3(tiles)

  def plan(image):
    return (tiling.plan_axis(image.shape[0], 10, 8, align=2),
            tiling.plan_axis(image.shape[1], 10, 8, align=2))

  streamed = list(tiling.infer_stream(images, box3, plan, batch_size=4,
                                      blend=False))
  assert len(streamed) == 4
  for image, out in zip(images, streamed):
    whole = ndimage.uniform_filter(image[..., 0], 3, mode="mirror")
    np.testing.assert_allclose(out, whole, rtol=1e-12)
  # 9 + 9 tiles of one shape, 8 of the same shape (9x30: 2 x 4 tiles),
  # 9 more: 35 tiles in batches of 4 -> 9 calls (one-by-one would be 11).
  assert len(calls) == 9 and set(calls) == {4}


def test_stream_reads_images_only_as_their_tiles_are_needed():
  read = []

  def images():
    for i in range(10):
      read.append(i)
      yield np.full((8, 8, 1), float(i))

  def plan(image):
    return (tiling.plan_axis(8, 8, 8, align=1),) * 2

  stream = tiling.infer_stream(images(), _identity, plan, batch_size=2,
                               blend=True, in_flight=2)
  first = next(stream)
  np.testing.assert_allclose(first, 0.0)
  assert len(read) <= 5  # two batches of two in flight, not all ten
  rest = list(stream)
  np.testing.assert_allclose([out.mean() for out in rest], range(1, 10),
                             rtol=1e-12)
