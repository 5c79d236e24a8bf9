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

Nothing of the size of the image is made here: tiles are cut from the
image as given (a `Source` makes each one model input), and the output
comes as bands of finished rows (`infer_bands`), so predict's memory for
a huge image is the stored image, one strip of tile outputs and what the
caller keeps of the bands.
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


@dataclasses.dataclass(frozen=True)
class Source:
  """An image to tile, made model input tile by tile.

  `pixels` [H, W, C] as stored (uint8 takes a quarter of float32); each
  cut tile goes through `prepare` (conversion to [0, 1], normalisation),
  which must be pointwise given whole-image statistics, so a tile's input
  equals that part of the whole image's input. A plain array is a Source
  without `prepare`.
  """
  pixels: np.ndarray
  prepare: Callable[[np.ndarray], np.ndarray] | None = None

  @property
  def shape(self) -> tuple[int, ...]:
    return self.pixels.shape


@dataclasses.dataclass(frozen=True)
class Band:
  """Finished rows of one image's stitched output: rows `top` to `top +
  len(values)` of image number `index` (in stream order), `height` rows in
  all."""
  index: int
  top: int
  height: int
  values: np.ndarray

  @property
  def last(self) -> bool:
    return self.top + len(self.values) == self.height


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


def infer_stream(images: Iterable[np.ndarray | Source],
                 predict: Callable[[np.ndarray], Any],
                 plan: Callable[[Any], tuple[AxisPlan, AxisPlan]], *,
                 batch_size: int, blend: bool,
                 in_flight: int = 2) -> Iterator[np.ndarray]:
  """`infer` over many images [H, W, C], one stitched result each, in order
  (`infer_bands`, each image's bands put together)."""
  return assemble(infer_bands(images, predict, plan, batch_size=batch_size,
                              blend=blend, in_flight=in_flight))


def assemble(bands: Iterable[Band]) -> Iterator[np.ndarray]:
  """Each image [H, W, ...] of a stream of its bands, in order."""
  whole = None
  for band in bands:
    if band.top == 0:
      whole = np.empty((band.height,) + band.values.shape[1:],
                       band.values.dtype)
    whole[band.top:band.top + len(band.values)] = band.values
    if band.last:
      yield whole


def infer_bands(images: Iterable[np.ndarray | Source],
                predict: Callable[[np.ndarray], Any],
                plan: Callable[[Any], tuple[AxisPlan, AxisPlan]], *,
                batch_size: int, blend: bool,
                in_flight: int = 2) -> Iterator[Band]:
  """The stitched outputs of many images, as bands of finished rows.

  Tiles of consecutive images of the same tile shape share batches, so a
  stack of small pages wastes no batch slots on padding but the very last;
  images are read from `images` only as their tiles are needed (a stack
  streams page by page). Up to `in_flight` batches are handed to `predict`
  before the oldest one's result is read: with JAX's asynchronous dispatch
  the device computes while the host cuts the next tiles, stitches and
  the caller writes the results.

  Memory is bounded by the tiles, not the image: tiles are cut from the
  image as it is (the mirrored border by index, `cut`, never a padded
  copy), and the weighted sums live in one tile row's strip (`_Canvas`),
  handed out as a `Band` once no later tile reaches it. Sums are float32
  (float64 for float64 outputs), added in tile order: a band equals the
  same rows of the whole image's weighted mean, bit for bit.
  """
  pending = collections.deque()  # (tiles' canvases and origins, output)
  canvases = collections.deque()  # images not yet handed out, oldest first
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
    while canvases:
      while canvases[0].bands:
        yield canvases[0].bands.popleft()
      if not canvases[0].done:
        break
      canvases.popleft()

  for index, image in enumerate(images):
    source = image if isinstance(image, Source) else Source(image)
    rows, cols = plan(source)
    canvas = _Canvas(index, rows, cols, blend)
    canvases.append(canvas)
    for y in rows.starts:
      for x in cols.starts:
        tile = cut(source.pixels, rows, cols, (y, x))
        if source.prepare is not None:
          tile = source.prepare(tile)
        if shape is not None and tile.shape != shape and batch:
          flush()
        shape = tile.shape
        batch.append((canvas, (y, x), tile))
        if len(batch) == batch_size:
          flush()
          yield from drain(in_flight - 1)
  if batch:
    flush()
  yield from drain(0)


def mirror_indices(start: int, size: int, length: int) -> np.ndarray:
  """Indices into an axis of `length` of positions `start` to `start +
  size` of its mirrored extension: what `np.pad(mode='reflect')` puts
  there (the border not repeated; a length-1 axis repeated), tested."""
  if length == 1:
    return np.zeros(size, np.intp)
  period = 2 * (length - 1)
  positions = np.mod(np.arange(start, start + size), period)
  return np.where(positions < length, positions, period - positions)


def cut(pixels: np.ndarray, rows: AxisPlan, cols: AxisPlan,
        origin: tuple[int, int]) -> np.ndarray:
  """The input tile at `origin` of the image mirror-padded by the plans'
  margins, cut from the unpadded image: a view inside it, a copy of
  mirrored indices at its border."""
  (y, x), spans = origin, []
  for start, plan in ((y - rows.margin, rows), (x - cols.margin, cols)):
    if start >= 0 and start + plan.tile_in <= plan.length:
      spans.append(slice(start, start + plan.tile_in))
    else:
      spans.append(mirror_indices(start, plan.tile_in, plan.length))
  if isinstance(spans[0], slice) or isinstance(spans[1], slice):
    return pixels[spans[0]][:, spans[1]]
  return pixels[np.ix_(*spans)]


class _Canvas:
  """One image's weighted sums of tile outputs, one tile row's strip at a
  time, handed out as bands of weighted means (`bands`)."""

  def __init__(self, index: int, rows: AxisPlan, cols: AxisPlan,
               blend: bool):
    self.index, self.rows, self.cols = index, rows, cols
    self.weight = (np.outer(window(rows.tile_out), window(cols.tile_out))
                   if blend else None)
    self.row_weight = axis_weight(rows, blend)
    self.col_weight = axis_weight(cols, blend)[:cols.length]
    self.strip = None  # image rows starts[row] .. + tile_out, summed
    self.row, self.added = 0, 0
    self.bands = collections.deque()

  @property
  def done(self) -> bool:
    return self.row == len(self.rows.starts)

  def add(self, origin: tuple[int, int], output: np.ndarray) -> None:
    """Adds the next tile's output (tiles come in row-major order)."""
    _, x = origin
    if self.strip is None:
      self.strip = np.zeros((self.rows.tile_out, self.cols.covered)
                            + output.shape[2:],
                            np.result_type(output.dtype, np.float32))
      if self.weight is not None:
        self.weight = self.weight.astype(self.strip.dtype)
    if self.weight is not None:
      output = output * self.weight.reshape(
          self.weight.shape + (1,) * (output.ndim - 2))
    self.strip[:, x:x + self.cols.tile_out] += output
    self.added += 1
    if self.added == len(self.cols.starts):
      self._finish_row()

  def _finish_row(self) -> None:
    """Hands out the rows no later tile reaches; moves the strip down."""
    starts, top = self.rows.starts, self.rows.starts[self.row]
    self.row, self.added = self.row + 1, 0
    bottom = min(starts[self.row] if self.row < len(starts)
                 else self.rows.covered, self.rows.length)
    if bottom > top:
      weight = np.outer(self.row_weight[top:bottom], self.col_weight)
      strip = self.strip[:bottom - top, :self.cols.length]
      self.bands.append(Band(self.index, top, self.rows.length, strip / (
          weight.astype(strip.dtype).reshape(
              weight.shape + (1,) * (strip.ndim - 2)))))
    if self.row < len(starts):
      step = starts[self.row] - top
      self.strip[:len(self.strip) - step] = self.strip[step:]
      self.strip[len(self.strip) - step:] = 0
    else:
      self.strip = None


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
