"""Overlap-tile inference: cut an image of any size into tiles, stitch back.

Pure numpy around a `predict` callback, so the geometry is testable without
a model. One plan serves both U-Net paddings (Ronneberger et al., 2015,
Fig. 2): a VALID-padded model predicts an output tile from an input tile
`margin` pixels larger on every side, the image border extrapolated by
mirroring; a SAME-padded model has margin 0, and its overlapping tiles are
blended with a smooth window so the seams, where zero padding fooled the
model, do not show.

Tile origins are multiples of the model's down-sampling factor (`align`),
so every tile sees the pooling grid a single pass over the whole mirrored
image would see: a VALID model's stitched output equals that single pass.
"""
import dataclasses
from typing import Callable, Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class AxisPlan:
  """The tiles along one image axis.

  `starts` are where the output tiles begin in image coordinates; the input
  tile of the same index begins there too, in the mirror-padded image.
  """
  length: int
  tile_in: int
  tile_out: int
  starts: tuple[int, ...]

  @property
  def margin(self) -> int:
    return (self.tile_in - self.tile_out) // 2

  @property
  def pad_after(self) -> int:
    return self.starts[-1] + self.tile_in - self.margin - self.length

  @property
  def covered(self) -> int:
    """Length of the stitched output before it is cut to the image."""
    return self.starts[-1] + self.tile_out


def plan_axis(length: int, tile_in: int, tile_out: int, *, align: int,
              overlap: int = 0) -> AxisPlan:
  """Tiles of `tile_out` outputs, `overlap` shared, covering `length`.

  The stride is rounded down to a multiple of `align` (unless the tile is
  smaller than `align`); the last tile may reach past the image into the
  mirrored border, whose outputs are dropped.
  """
  if length < 1 or tile_out < 1 or tile_in < tile_out:
    raise ValueError(f"length {length}, tile {tile_in} -> {tile_out}")
  if (tile_in - tile_out) % 2:
    raise ValueError(f"tile {tile_in} -> {tile_out}: uneven margins")
  stride = tile_out - overlap
  if stride >= align:
    stride -= stride % align
  stride = max(1, min(stride, tile_out))
  count = 1 + max(0, -(-(length - tile_out) // stride))
  return AxisPlan(length, tile_in, tile_out,
                  tuple(i * stride for i in range(count)))


def window(size: int) -> np.ndarray:
  """A smooth weight, largest mid-tile and positive everywhere (Hann)."""
  return np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2


def infer(image: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
          rows: AxisPlan, cols: AxisPlan, *, batch_size: int,
          blend: bool) -> np.ndarray:
  """`predict` over the tiles of `image` [H, W, C], stitched to [H, W, ...].

  `predict` maps [batch_size, tile_in, tile_in', C] to [batch_size,
  tile_out, tile_out', ...]; the last batch is filled up with copies so it
  sees one shape. Overlaps are averaged, weighted by `window` if `blend`.
  """
  padded = np.pad(image, ((rows.margin, rows.pad_after),
                          (cols.margin, cols.pad_after), (0, 0)),
                  mode="reflect")
  weight = (np.outer(window(rows.tile_out), window(cols.tile_out)) if blend
            else np.ones((rows.tile_out, cols.tile_out)))
  total = None
  weights = np.zeros((rows.covered, cols.covered))
  for origins, tiles in _batches(padded, rows, cols, batch_size):
    outputs = np.asarray(predict(tiles))[:len(origins)]
    if total is None:
      total = np.zeros((rows.covered, cols.covered) + outputs.shape[3:])
    expanded = weight.reshape(weight.shape + (1,) * (outputs.ndim - 3))
    for (y, x), output in zip(origins, outputs):
      total[y:y + rows.tile_out, x:x + cols.tile_out] += expanded * output
      weights[y:y + rows.tile_out, x:x + cols.tile_out] += weight
  weights = weights.reshape(weights.shape + (1,) * (total.ndim - 2))
  return (total / weights)[:rows.length, :cols.length]


def _batches(padded, rows: AxisPlan, cols: AxisPlan,
             batch_size: int) -> Iterator[tuple[list, np.ndarray]]:
  origins = [(y, x) for y in rows.starts for x in cols.starts]
  for first in range(0, len(origins), batch_size):
    chunk = origins[first:first + batch_size]
    tiles = [padded[y:y + rows.tile_in, x:x + cols.tile_in]
             for y, x in chunk]
    tiles += tiles[:1] * (batch_size - len(tiles))
    yield chunk, np.stack(tiles)


def dihedral_average(
    predict: Callable[[np.ndarray], np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
  """Test-time augmentation: `predict` averaged over the 8 flips/rotations.

  Each transformed batch is predicted and transformed back, so the result
  lines up with the input whatever the model's output size.
  """

  def averaged(tiles: np.ndarray) -> np.ndarray:
    total = 0.0
    for turns in range(4):
      for flip in (False, True):
        view = np.rot90(tiles, turns, axes=(1, 2))
        view = view[:, :, ::-1] if flip else view
        output = np.asarray(predict(np.ascontiguousarray(view)))
        output = output[:, :, ::-1] if flip else output
        total = total + np.rot90(output, -turns, axes=(1, 2))
    return total / 8

  return averaged
