"""Pictures of objects: each in its own colour, outlined, over the image."""
import numpy as np

from unetjax.viz import plots


def overlay(image: np.ndarray, ids: np.ndarray, alpha: float = 0.35,
            edges: np.ndarray | None = None) -> np.ndarray:
  """RGB float [H, W, 3] in [0, 1]: every object of `ids` (0 background) in
  its own colour over the image, its outline drawn in that colour too.

  `edges` (`outlines(ids)`) may be given for `ids` that are a band of a
  larger picture: an outline depends on the rows around the band."""
  from skimage.color import label2rgb  # pylint: disable=g-import-not-at-top
  image = np.asarray(image, np.float32)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  ids = np.asarray(ids)
  coloured = label2rgb(ids, image, bg_label=0, alpha=alpha, image_alpha=1.0)
  solid = label2rgb(ids, bg_label=0)
  edges = outlines(ids) if edges is None else edges
  coloured[edges] = solid[edges]
  return np.clip(coloured, 0.0, 1.0)


def outlines(ids: np.ndarray) -> np.ndarray:
  """Each object's inner outline, bool [H, W]: a pixel one step (up,
  down, left, right) from another id."""
  from skimage.segmentation import find_boundaries  # pylint: disable=g-import-not-at-top
  return find_boundaries(ids, mode="inner")


def instance_samples(images, truths, predicted, titles,
                     path: str) -> np.ndarray:
  """Rows of image | true objects | predicted objects; returns RGB pixels."""
  rows = len(images)
  fig, axes = plots.pyplot().subplots(rows, 3, figsize=(9, 3 * rows),
                                      squeeze=False)
  for i in range(rows):
    image = np.asarray(images[i], np.float32)
    gray = image[..., 0] if image.shape[-1] == 1 else image
    panels = ((gray, "image"),
              (overlay(image, truths[i]),
               f"truth, {int(np.unique(truths[i][truths[i] > 0]).size)} "
               "objects"),
              (overlay(image, predicted[i]), titles[i]))
    for ax, (picture, name) in zip(axes[i], panels):
      ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None,
                vmin=0, vmax=1, interpolation="nearest")
      ax.set_title(name, fontsize=7)
      ax.axis("off")
  return plots.save_figure(fig, path)
