"""Whole-image segmentation with a trained model: overlap-tile inference
over any number of images and stacks, and the files it writes.

The `unetjax-predict` command (`unetjax/predict.py`) is flags over
`predict_files`; the predict benchmark calls `segment_files` directly.
Every input is read and checked before anything is written (`inputs`).

Memory follows the tiles, not the image: an input stays as stored (8-bit
stays 8-bit), each tile is converted and normalised as it is cut (the
percentiles from a histogram of the whole image), and the prediction
comes in bands of rows that go straight into the 8-bit mask and
probability pixels (`outputs.PageResult`); the overlay is coloured in
bands too. What stays whole-image: the stored input, the output pixels,
and for `--instances` the float prediction map the post-processing needs.
"""
import collections
import dataclasses
import functools
import time
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unetjax.data import normalize
from unetjax.inference import channels, inputs, tiling, trained
from unetjax.inference import outputs as outputs_lib
from unetjax.inference.inputs import (check_counts, check_outputs,
                                      input_paths, input_shape)
from unetjax.models.unet import valid_input_sizes
from unetjax.runtime import console
from unetjax.runtime.errors import ConfigError
from unetjax.training import steps as steps_lib


class Segmenter:
  """A segmentation model as a function: image [H, W, C] -> prediction.

  The prediction is the task's (`task.predict`) of the stitched logits:
  probabilities [H, W] or [H, W, classes], or class ids [H, W]. Logits, not
  probabilities, are blended and averaged, so any task's output works.
  """

  def __init__(self, model: nnx.Module, task, in_channels: int, *,
               tile_size: int = 256, batch_size: int = 8, tta: bool = False,
               normalization: dict | None = None):
    if not hasattr(model, "output_size"):
      raise ConfigError(f"model {type(model).__name__} has no output_size(); "
                        "tiled prediction needs a U-Net")
    sizes = valid_input_sizes(model, limit=tile_size)
    if not sizes:
      raise ConfigError(f"tile_size={tile_size} is below the smallest input "
                        f"this model accepts, {valid_input_sizes(model)[0]}")
    self.outputs = {size: model.output_size(size) for size in sizes}
    self.align = 2 ** model.depth
    # SAME padding: tiles overlap and are blended; VALID tiles abut.
    self.blend = all(size == out for size, out in self.outputs.items())
    if tta and not getattr(task, "dihedral_invariant", True):
      # Flipping the input permutes what some channels mean (star's rays):
      # averaging them unpermuted would be silently wrong.
      raise ConfigError(f"--tta: the outputs of task {type(task).__name__} "
                        f"({getattr(task, 'target', '')}) change meaning "
                        "under flips and turns; drop --tta")
    self.task = task
    self.in_channels = in_channels
    self.batch_size = batch_size
    self.normalization = normalization  # as training had it (experiment.json)
    graphdef, state = nnx.split(model)
    self._state = state
    self._forward = jax.jit(functools.partial(
        _forward_tta if tta else _forward, graphdef))
    self._compiled = {}  # tile batch shape -> executable
    self.compile_seconds = 0.0
    self.prediction = jax.eval_shape(task.predict, jax.ShapeDtypeStruct(
        (1, 8, 8, task.num_outputs), jnp.float32))
    if self.prediction.ndim not in (3, 4):
      raise ConfigError(f"task {type(task).__name__} predicts shape "
                        f"{self.prediction.shape} for [1, 8, 8] pixels; "
                        "expected a value per pixel")
    self._predict = jax.jit(lambda logits: task.predict(logits[None])[0])

  def predict_tiles(self, tiles: np.ndarray) -> jax.Array:
    """Logits of a batch of tiles, dispatched without waiting for them.

    Each tile shape is compiled once, ahead of its first call, with the
    garbage collector paused (`steps.compile_ahead`)."""
    key = tiles.shape
    if key not in self._compiled:
      started = time.perf_counter()
      self._compiled[key] = steps_lib.compile_ahead(self._forward,
                                                    self._state, tiles)
      self.compile_seconds += time.perf_counter() - started
    return self._compiled[key](self._state, tiles)

  def plan(self, length: int) -> tiling.AxisPlan:
    """One tile if one fits, else the largest tile; SAME tiles overlap 1/4."""
    fits = [size for size, out in self.outputs.items() if out >= length]
    tile_in = fits[0] if fits else max(self.outputs)
    tile_out = self.outputs[tile_in]
    overlap = tile_out // 4 if tile_in == tile_out else 0
    return tiling.plan_axis(length, tile_in, tile_out, align=self.align,
                            overlap=overlap)

  def _plans(self, image: np.ndarray):
    return self.plan(image.shape[0]), self.plan(image.shape[1])

  def source(self, pixels: np.ndarray,
             divisor: float | None = None) -> tiling.Source:
    """An image [H, W, C] as the tiler takes it: stored integers (with the
    `divisor` that maps them to [0, 1], `image_io.unit_divisor`), uint8, or
    floats in [0, 1]. The normalisation's statistics are taken once from
    the whole image (a histogram for integers: no float copy), then each
    tile is converted and normalised as it is cut (`normalize.apply` is
    pointwise given them), so no float copy of the image is made."""
    chosen = self.normalization
    image_stats = (None if chosen is None
                   else normalize.stats(pixels, chosen, divisor))
    return tiling.Source(pixels, functools.partial(
        normalize.apply, chosen=chosen, image_stats=image_stats,
        divisor=divisor))

  def _sources(self, images):
    return (image if isinstance(image, tiling.Source) else self.source(image)
            for image in images)

  def logits_stream(self, images: Iterable[np.ndarray | tiling.Source]
                    ) -> Iterator[np.ndarray]:
    """Stitched logits of each image [H, W, C], in order; tiles of
    consecutive images share batches (`tiling.infer_stream`)."""
    return tiling.infer_stream(self._sources(images), self.predict_tiles,
                               self._plans, batch_size=self.batch_size,
                               blend=self.blend)

  def logits(self, image: np.ndarray) -> np.ndarray:
    return next(self.logits_stream([image]))

  def bands(self, images: Iterable[np.ndarray | tiling.Source]
            ) -> Iterator[tiling.Band]:
    """The task's prediction of each image in bands of finished rows
    (`tiling.infer_bands`), in order: what `segment_files` writes from,
    never holding the image's logits whole."""
    for band in tiling.infer_bands(
        self._sources(images), self.predict_tiles, self._plans,
        batch_size=self.batch_size, blend=self.blend):
      yield dataclasses.replace(band, values=np.asarray(
          self._predict(band.values)))

  def stream(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The task's prediction for each image [H, W, C], in order."""
    return tiling.assemble(self.bands(images))

  def __call__(self, image: np.ndarray) -> np.ndarray:
    return next(self.stream([image]))


def _forward(graphdef, state, tiles):
  model = nnx.merge(graphdef, state)
  model.eval()
  return model(tiles).astype(jnp.float32)


def _forward_tta(graphdef, state, tiles):
  """`_forward` averaged over the 8 flips and rotations, in one program.

  The views of one shape (all 8 for square tiles) run through one copy of
  the model under `lax.map`, so compiling costs about one forward pass."""
  views = [(turns, flip) for turns in range(4) for flip in (False, True)]
  total = 0.0
  for parity in (0, 1) if tiles.shape[1] != tiles.shape[2] else (None,):
    group = [v for v in views if parity is None or v[0] % 2 == parity]
    stacked = jnp.stack([_dihedral(tiles, *v) for v in group])
    outputs = jax.lax.map(functools.partial(_forward, graphdef, state),
                          stacked)
    total += sum(_dihedral_inverse(out, *v) for out, v in zip(outputs, group))
  return total / len(views)


def _dihedral(x, turns, flip):
  x = jnp.rot90(x, turns, axes=(1, 2))
  return x[:, :, ::-1] if flip else x


def _dihedral_inverse(y, turns, flip):
  y = y[:, :, ::-1] if flip else y
  return jnp.rot90(y, -turns, axes=(1, 2))


def predict_files(workdir: str, pattern: str, output: str, *,
                  checkpoint: str = "best", tile_size: int = 256,
                  batch_size: int = 8, tta: bool = False,
                  probabilities: bool = False, overlay: bool = False,
                  overwrite: bool = False, instances: bool = False,
                  loader=None) -> list[str]:
  """Segments every input; returns the paths written.

  Nothing is written until every input was checked and every output path
  found free (or `overwrite`); an input is never overwritten. The model is
  the run in `workdir` at `checkpoint`, or what `loader()` returns (a
  shipped model: `workdir` then only names it in messages).
  """
  check_counts(tile_size, batch_size)
  paths = input_paths(pattern, output)
  kinds = (["mask"] + ["prob"] * probabilities + ["overlay"] * overlay
           + ["instances"] * instances)
  check_outputs(paths, output, kinds, overwrite)
  shapes = {path: input_shape(path) for path in paths}
  run = loader() if loader else trained.load(workdir, checkpoint)
  model = run.model()
  in_channels = run.info.in_channels
  converted = channels.conversions(
      shapes, in_channels, run.config.data.get("channels") == 1, workdir)
  task = run.task
  if instances and not hasattr(task, "to_instances"):
    raise ConfigError(f"--instances: the run in {workdir} was trained with "
                      f"task.name={run.config.task.name!r}, which "
                      "finds no objects; train with task.name='instances'")
  segment = Segmenter(model, task, in_channels,
                      tile_size=tile_size, batch_size=batch_size, tta=tta,
                      normalization=run.input)
  if probabilities and not jnp.issubdtype(segment.prediction.dtype,
                                          jnp.floating):
    raise ConfigError(f"task {run.config.task.name!r} predicts class "
                      "ids, not probabilities: drop --probabilities")
  return segment_files(segment, shapes, output, kinds,
                       task.to_instances if instances else None,
                       channels=converted)


def segment_files(segment: Segmenter, shapes: dict[str, tuple[int, int]],
                  output: str, kinds: list[str],
                  to_instances=None,
                  channels: dict[str, int] | None = None) -> list[str]:
  """Streams every page of every input (`shapes`: path -> (pages,
  channels)) through `segment`, writing each output as it completes; a
  stack is read and written page by page. `to_instances` (a prediction ->
  object ids) gives the 'instances' output; `channels` {path: count}
  converts those inputs' pages (`channels.conversions`). Returns the paths
  written."""
  pages = collections.deque()  # (path, stored pixels, divisor) in flight

  def images():
    for path in shapes:
      for pixels, divisor in inputs.read_stored_pages(
          path, (channels or {}).get(path)):
        pages.append((path, pixels, divisor))
        yield segment.source(pixels, divisor)

  written, files = [], {}
  progress = console.PredictProgress(segment, sum(
      count for count, _ in shapes.values()))
  try:
    for band in segment.bands(images()):
      if band.top == 0:
        path, pixels, divisor = pages.popleft()
        result = outputs_lib.PageResult(
            band.height, band.values.shape[1], segment.task,
            probability="prob" in kinds,
            keep_prediction=to_instances is not None)
      result.add(band.top, band.values)
      if not band.last:
        continue
      progress.image_done(path)
      if path not in files:
        files[path] = outputs_lib.Outputs(path, output, shapes[path][0],
                                          kinds)
      objects = (None if to_instances is None
                 else to_instances(result.prediction))
      if files[path].add(result, (pixels, divisor), objects):
        written += files.pop(path).paths
  finally:
    progress.close()
    for unfinished in files.values():
      unfinished.abort()
  return written
