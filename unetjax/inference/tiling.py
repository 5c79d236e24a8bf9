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
import collections
import dataclasses
from typing import Any, Callable, Iterable, Iterator

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


def axis_weight(plan: AxisPlan, blend: bool) -> np.ndarray:
  """Sum over one axis's tiles of their window: [covered].

  The tiles are the grid `rows.starts x cols.starts` and a tile's weight
  is `outer(window, window)`, so the summed weight of every pixel is the
  outer product of the two axes' sums: no 2-D weight map is built.
  """
  total = np.zeros(plan.covered)
  one = window(plan.tile_out) if blend else np.ones(plan.tile_out)
  for start in plan.starts:
    total[start:start + plan.tile_out] += one
  return total


def infer(image: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
          rows: AxisPlan, cols: AxisPlan, *, batch_size: int,
          blend: bool) -> np.ndarray:
  """`predict` over the tiles of `image` [H, W, C], stitched to [H, W, ...].

  `predict` maps [batch_size, tile_in, tile_in', C] to [batch_size,
  tile_out, tile_out', ...]; the last batch is filled up with copies so it
  sees one shape. Overlaps are averaged, weighted by `window` if `blend`.
  """
  return next(infer_stream([image], predict, lambda _: (rows, cols),
                           batch_size=batch_size, blend=blend))


def infer_stream(images: Iterable[np.ndarray],
                 predict: Callable[[np.ndarray], Any],
                 plan: Callable[[np.ndarray], tuple[AxisPlan, AxisPlan]], *,
                 batch_size: int, blend: bool,
                 in_flight: int = 2) -> Iterator[np.ndarray]:
  """`infer` over many images [H, W, C], one stitched result each, in order.

  Tiles of consecutive images of the same tile shape share batches, so a
  stack of small pages wastes no batch slots on padding but the very last;
  images are read from `images` only as their tiles are needed (a stack
  streams page by page). Up to `in_flight` batches are handed to `predict`
  before the oldest one's result is read: with JAX's asynchronous dispatch
  the device computes while the host cuts the next tiles, stitches and
  the caller writes the results. Stitching sums in float32 (float64
  for float64 outputs).
  """
  pending = collections.deque()  # (tiles' canvases and origins, output)
  canvases = collections.deque()  # images not yet complete, oldest first
  batch, shape = [], None

  def flush():
    tiles = [tile for _, _, tile in batch]
    tiles += tiles[:1] * (batch_size - len(tiles))
    pending.append(([(c, o) for c, o, _ in batch], predict(np.stack(tiles))))
    batch.clear()

  def drain(keep: int):
    while len(pending) > keep:
      targets, outputs = pending.popleft()
      outputs = np.asarray(outputs)
      for (canvas, origin), output in zip(targets, outputs):
        canvas.add(origin, output)
    while canvases and canvases[0].done:
      yield canvases.popleft().result()

  for image in images:
    rows, cols = plan(image)
    canvas = _Canvas(rows, cols, blend)
    canvases.append(canvas)
    padded = np.pad(image, ((rows.margin, rows.pad_after),
                            (cols.margin, cols.pad_after), (0, 0)),
                    mode="reflect")
    for y in rows.starts:
      for x in cols.starts:
        tile = padded[y:y + rows.tile_in, x:x + cols.tile_in]
        if shape is not None and tile.shape != shape and batch:
          flush()
        shape = tile.shape
        batch.append((canvas, (y, x), tile))
        if len(batch) == batch_size:
          flush()
          yield from drain(in_flight - 1)
    del padded
  if batch:
    flush()
  yield from drain(0)


class _Canvas:
  """One image's weighted sum of tile outputs, then their weighted mean."""

  def __init__(self, rows: AxisPlan, cols: AxisPlan, blend: bool):
    self.rows, self.cols = rows, cols
    self.weight = (np.outer(window(rows.tile_out), window(cols.tile_out))
                   if blend else None)
    self.total = None
    self.missing = len(rows.starts) * len(cols.starts)

  @property
  def done(self) -> bool:
    return self.missing == 0

  def add(self, origin: tuple[int, int], output: np.ndarray) -> None:
    y, x = origin
    if self.total is None:
      self.total = np.zeros((self.rows.covered, self.cols.covered)
                            + output.shape[2:],
                            np.result_type(output.dtype, np.float32))
      if self.weight is not None:
        self.weight = self.weight.astype(self.total.dtype)
    if self.weight is not None:
      output = output * self.weight.reshape(
          self.weight.shape + (1,) * (output.ndim - 2))
    self.total[y:y + self.rows.tile_out, x:x + self.cols.tile_out] += output
    self.missing -= 1

  def result(self) -> np.ndarray:
    blend = self.weight is not None
    weight = np.outer(axis_weight(self.rows, blend)[:self.rows.length],
                      axis_weight(self.cols, blend)[:self.cols.length])
    total = self.total[:self.rows.length, :self.cols.length]
    total /= weight.astype(total.dtype).reshape(weight.shape + (1,) * (total.ndim - 2))
    return total


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
