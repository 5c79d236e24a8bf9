"""Whole-image segmentation with a trained model: overlap-tile inference
over any number of images and stacks, and the files it writes.

The `unetjax-predict` command (`unetjax/predict.py`) is flags over
`predict_files`; the predict benchmark calls `segment_files` directly.
Every input is read and checked before anything is written.
"""
import collections
import functools
import glob
import os
import time
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unetjax.data import image_io, normalize
from unetjax.inference import channels, tiling, trained
from unetjax.models.unet import valid_input_sizes
from unetjax.runtime import console
from unetjax.runtime.errors import ConfigError, DataError
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

  def logits_stream(self, images: Iterable[np.ndarray]) -> Iterator[
      np.ndarray]:
    """Stitched logits of each image [H, W, C], in order; tiles of
    consecutive images share batches (`tiling.infer_stream`)."""
    images = (normalize.apply(image, self.normalization) for image in images)
    return tiling.infer_stream(images, self.predict_tiles, self._plans,
                               batch_size=self.batch_size, blend=self.blend)

  def logits(self, image: np.ndarray) -> np.ndarray:
    return next(self.logits_stream([image]))

  def stream(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The task's prediction for each image [H, W, C], in order."""
    for logits in self.logits_stream(images):
      yield np.asarray(self._predict(logits))

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


def mask_and_probability(prediction: np.ndarray, task=None):
  """(class-id mask, probability of its class or None) of a prediction.

  A task whose prediction holds more than per-pixel probabilities (the
  star target's distances) says which part they are
  (`task.pixel_prediction`)."""
  if hasattr(task, "pixel_prediction"):
    prediction = task.pixel_prediction(prediction)
  if not np.issubdtype(prediction.dtype, np.floating):
    return prediction.astype(np.uint8), None
  if prediction.ndim == 2:  # foreground probability
    return (prediction > 0.5).astype(np.uint8), prediction
  return prediction.argmax(-1).astype(np.uint8), prediction.max(-1)


OUTPUT_KINDS = ("mask", "prob", "overlay", "instances")


def input_paths(pattern: str, output: str | None = None) -> list[str]:
  """The files a path, a directory (its image files) or a glob names,
  sorted, decided before anything is written. Files in `output` named like
  this tool's outputs of another input (`a_mask.png` next to `a.png`) are
  left out: they are an earlier run's results, not new inputs."""
  if os.path.isdir(pattern):
    paths = sorted(p for p in glob.glob(os.path.join(glob.escape(pattern),
                                                     "*"))
                   if os.path.isfile(p)
                   and p.lower().endswith(image_io.IMAGE_SUFFIXES))
    if not paths:
      raise DataError(f"--input={pattern!r} is a folder without image files "
                      f"({', '.join(image_io.IMAGE_SUFFIXES)})")
  else:
    paths = sorted(p for p in glob.glob(pattern) if not os.path.isdir(p))
  if output is not None:
    earlier = earlier_outputs(paths, output)
    if earlier:
      print(f"Not reading {len(earlier)} file(s) in {output} named like "
            f"outputs of the other inputs ({os.path.basename(earlier[0])}"
            f"{', ...' if len(earlier) > 1 else ''})", flush=True)
      paths = [p for p in paths if p not in earlier]
  if not paths and not glob.has_magic(pattern):
    paths = [pattern]  # read_input names what is wrong with it
  if not paths:
    raise DataError(f"--input={pattern!r} matches no file")
  names = [_stem(p) for p in paths]
  clashes = sorted({n for n in names if names.count(n) > 1})
  if clashes:
    raise DataError(f"--input={pattern!r}: several inputs are named "
                    f"{clashes[:3]}; their outputs would overwrite each other")
  return paths


def earlier_outputs(paths: list[str], output: str) -> list[str]:
  """The inputs that are this tool's outputs of another input, in `output`."""
  stems = {_stem(p) for p in paths}
  folder = os.path.realpath(output)
  return [p for p in paths
          if os.path.dirname(os.path.realpath(p)) == folder
          and any(_stem(p) == f"{stem}_{kind}" for stem in stems
                  for kind in OUTPUT_KINDS)]


def output_paths(path: str, output: str, kinds: list[str]) -> list[str]:
  """Where the outputs of one input go: `<output>/<stem>_<kind><suffix>`."""
  suffix = ".tif" if path.lower().endswith(image_io.TIFF_SUFFIXES) else ".png"
  return [os.path.join(output, f"{_stem(path)}_{kind}{suffix}")
          for kind in kinds]


def check_outputs(paths: list[str], output: str, kinds: list[str],
                  overwrite: bool) -> None:
  """Refuses, before anything is written, an --output that is a file, an
  output that would replace an input, and (unless `overwrite`) one that
  would replace an existing file."""
  if os.path.exists(output) and not os.path.isdir(output):
    raise DataError(f"--output={output}: is a file; expected a directory "
                    "for the masks")
  inputs = {os.path.realpath(p): p for p in paths}
  targets = [t for p in paths for t in output_paths(p, output, kinds)]
  for target in targets:
    if os.path.realpath(target) in inputs:
      raise DataError(f"--output={output}: {os.path.basename(target)} would "
                      f"overwrite the input {inputs[os.path.realpath(target)]}"
                      "; choose another --output")
  existing = [t for t in targets if os.path.lexists(t)]
  if existing and not overwrite:
    raise DataError(f"--output={output} already holds "
                    f"{os.path.basename(existing[0])}"
                    f"{f' and {len(existing) - 1} more outputs' if len(existing) > 1 else ''}"
                    "; pass --overwrite to replace them, or choose another "
                    "--output")
  for target in existing:
    if not os.path.isfile(target):
      raise DataError(f"--output={output}: {target} is not a file; it cannot "
                      "be replaced by a mask")


def check_counts(tile_size: int, batch_size: int) -> None:
  for flag, value, what in (("tile_size", tile_size, "pixels"),
                            ("batch_size", batch_size, "tiles")):
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f"--{flag}={value}: expected a positive number of "
                        f"{what}")


def read_input(path: str) -> np.ndarray:
  """[pages, H, W, C] in [0, 1]: one image, or every page of a TIFF stack."""
  if path.lower().endswith(image_io.TIFF_SUFFIXES):
    return image_io.read_stack(path)
  return image_io.read_image(path)[None]


def input_shape(path: str) -> tuple[int, int]:
  """(pages, channels) of an input, checked: a TIFF from its header (its
  pages are read one at a time later), any other image read whole."""
  if path.lower().endswith(image_io.TIFF_SUFFIXES):
    pages, _, _, channels = image_io.stack_shape(path)
    return pages, channels
  return 1, image_io.read_image(path).shape[-1]


def read_pages(path: str, channels: int | None = None
               ) -> Iterator[np.ndarray]:
  """An input's pages [H, W, C], read as they are asked for; `channels`
  converts them as the training loaders do (`image_io.read_image`)."""
  if path.lower().endswith(image_io.TIFF_SUFFIXES):
    pages = image_io.iter_stack(path)
    if channels is None:
      return pages
    return (image_io.convert_channels(page, channels, path)
            for page in pages)
  return iter([image_io.read_image(path, channels=channels)])


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
  sources = collections.deque()  # (path, page) of the images in flight

  def images():
    for path in shapes:
      for page in read_pages(path, (channels or {}).get(path)):
        sources.append((path, page))
        yield page

  written, outputs = [], {}
  progress = console.PredictProgress(segment, sum(
      pages for pages, _ in shapes.values()))
  try:
    for prediction in segment.stream(images()):
      path, page = sources.popleft()
      progress.image_done(path)
      if path not in outputs:
        outputs[path] = _Outputs(path, output, shapes[path][0], kinds)
      objects = None if to_instances is None else to_instances(prediction)
      pixels = mask_and_probability(prediction, segment.task)
      if outputs[path].add(page, pixels, objects):
        written += outputs.pop(path).paths
  finally:
    progress.close()
    for unfinished in outputs.values():
      unfinished.abort()
  return written


class _Outputs:
  """The output files of one input (mask; probability map, overlay, object
  ids on request), written as its pages come: a one-page input as one
  image, a stack page by page. With objects the overlay shows each object
  in its own colour, outlined; `instances` holds their ids (16-bit PNG, or
  TIFF)."""

  def __init__(self, path: str, output: str, pages: int, kinds: list[str]):
    self.kinds = list(kinds)
    self.paths = output_paths(path, output, self.kinds)
    self.missing = pages
    self.writers = ([image_io.StackWriter(target, kind) for target, kind
                     in zip(self.paths, self.kinds)] if pages > 1 else None)

  def add(self, page: np.ndarray, result, objects=None) -> bool:
    """Writes one page's pictures; True once the input is complete."""
    mask, prob = result
    pictures = {"mask": mask, "prob": prob, "instances": objects}
    if "overlay" in self.kinds and objects is not None:
      from unetjax.instances import plots as instance_plots  # pylint: disable=g-import-not-at-top
      pictures["overlay"] = instance_plots.overlay(page, objects)
    elif "overlay" in self.kinds:
      from skimage.color import label2rgb  # pylint: disable=g-import-not-at-top
      pictures["overlay"] = label2rgb(
          mask, page[..., 0] if page.shape[-1] == 1 else page, bg_label=0,
          alpha=0.35, image_alpha=1.0)
    for index, (target, kind) in enumerate(zip(self.paths, self.kinds)):
      if self.writers:
        self.writers[index].add(pictures[kind])
      elif kind == "mask":
        image_io.write_mask(target, mask)
      elif kind == "instances":
        image_io.write_instances(target, objects)
      else:
        image_io.write_image(target, pictures[kind])
    self.missing -= 1
    if self.missing == 0 and self.writers:
      for writer in self.writers:
        writer.close()
    return self.missing == 0

  def abort(self) -> None:
    for writer in self.writers or ():
      writer.abort()


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]
