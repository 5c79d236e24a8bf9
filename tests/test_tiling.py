"""Overlap-tile geometry, checked with model-free `predict` functions."""
import numpy as np
import pytest
from scipy import ndimage

from unetjax import tiling


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
