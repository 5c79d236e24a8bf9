"""The files predict writes for each input, and the page results they are
made from: kept as narrow as the files (8-bit masks and probability
pixels), filled band by band as the tiler finishes rows
(`tiling.infer_bands`), so no float map of the whole image is needed
unless objects are asked for (their post-processing works on whole
maps).
"""
import numpy as np

from unetjax.data import image_io, image_write
from unetjax.inference import inputs


def mask_and_probability(prediction: np.ndarray, task=None):
  """(class-id mask, probability of its class or None) of a prediction:
  pointwise, so a band of rows gives that band of the whole's.

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


class PageResult:
  """One page's mask and probability pixels [H, W] (uint8), filled from
  bands of its prediction; with `keep_prediction` (objects need the whole
  map) also the prediction itself, the one whole-image float array."""

  def __init__(self, height: int, width: int, task, *, probability: bool,
               keep_prediction: bool):
    self.task = task
    self.mask = np.empty((height, width), np.uint8)
    self.prob = np.empty((height, width), np.uint8) if probability else None
    self.keep_prediction = keep_prediction
    self.prediction = None

  def add(self, top: int, prediction: np.ndarray) -> None:
    """Rows `top` to `top + len(prediction)` of the page's prediction."""
    rows = slice(top, top + len(prediction))
    if self.keep_prediction:
      if self.prediction is None:
        self.prediction = np.empty(self.mask.shape + prediction.shape[2:],
                                   prediction.dtype)
      self.prediction[rows] = prediction
    mask, prob = mask_and_probability(prediction, self.task)
    self.mask[rows] = mask
    if self.prob is not None:
      if prob is None:
        raise ValueError("a 'prob' output of a prediction of class ids")
      self.prob[rows] = image_write.image_pixels(prob)


class Outputs:
  """The output files of one input (mask; probability map, overlay, object
  ids on request), written as its pages come: a one-page input as one
  image, a stack page by page. With objects the overlay shows each object
  in its own colour, outlined; `instances` holds their ids (16-bit PNG, or
  TIFF)."""

  def __init__(self, path: str, output: str, pages: int, kinds: list[str]):
    self.kinds = list(kinds)
    self.paths = inputs.output_paths(path, output, self.kinds)
    self.missing = pages
    self.writers = ([image_write.StackWriter(target, kind) for target, kind
                     in zip(self.paths, self.kinds)] if pages > 1 else None)

  def add(self, result: PageResult, page=None,
          objects: np.ndarray | None = None) -> bool:
    """Writes one page's pictures (`page`, its stored values and their
    divisor, is needed for the overlay only); True once the input is
    complete."""
    if objects is not None and not self.writers:
      image_write.check_instances(
          self.paths[self.kinds.index("instances")], objects)
    pictures = {"mask": result.mask, "prob": result.prob,
                "instances": objects}
    if "overlay" in self.kinds:
      pictures["overlay"] = overlay_pixels(
          *page, result.mask if objects is None else objects,
          objects=objects is not None)
    for index, (target, kind) in enumerate(zip(self.paths, self.kinds)):
      if self.writers and kind == "instances":
        self.writers[index].add(objects)
      elif self.writers:
        self.writers[index].add_pixels(pictures[kind])
      elif kind == "mask":
        image_write.write_mask(target, result.mask)
      elif kind == "instances":
        image_write.write_instances(target, objects)
      else:
        image_write.write_pixels(target, pictures[kind])
    self.missing -= 1
    if self.missing == 0 and self.writers:
      for writer in self.writers:
        writer.close()
    return self.missing == 0

  def abort(self) -> None:
    for writer in self.writers or ():
      writer.abort()


def overlay_pixels(pixels: np.ndarray, divisor: float | None,
                   labels: np.ndarray, objects: bool = False,
                   rows: int = 64) -> np.ndarray:
  """The labels coloured over the page (`pixels` / `divisor`) as 8-bit RGB
  [H, W, 3]: the mask's classes (scikit-image's `label2rgb`), or with
  `objects` each object outlined (`instances.plots.overlay`).

  Made `rows` rows at a time: `label2rgb` works in float64 over whatever
  it is given (about 70 bytes a pixel measured here), so it is given
  bands. It colours each label by its rank among the labels present, so
  every band is given all the labels too (extra rows, dropped); an
  outline looks one pixel away, so a band's outlines are found with a
  row of its neighbours on each side. Each band is then that band of the
  whole picture, bit for bit (tested)."""
  from skimage.color import label2rgb  # pylint: disable=g-import-not-at-top

  from unetjax.instances import plots as instance_plots  # pylint: disable=g-import-not-at-top
  height, width = labels.shape
  present = np.unique(labels)
  extra = np.resize(present, (-(-len(present) // width), width))
  picture = np.empty((height, width, 3), np.uint8)
  for top in range(0, height, rows):
    page = image_io.as_unit(pixels[top:top + rows], divisor)
    page = page[..., 0] if page.shape[-1] == 1 else page
    count = len(page)
    page = np.concatenate([page, np.zeros((len(extra),) + page.shape[1:],
                                          page.dtype)])
    band = np.concatenate([labels[top:top + count], extra])
    if objects:
      above = min(top, 1)
      edges = instance_plots.outlines(
          labels[top - above:top + count + 1])[above:above + count]
      coloured = instance_plots.overlay(page, band, edges=np.concatenate(
          [edges, np.zeros(extra.shape, bool)]))
    else:
      coloured = label2rgb(band, page, bg_label=0, alpha=0.35,
                           image_alpha=1.0)
    picture[top:top + count] = image_write.image_pixels(coloured[:count])
  return picture
