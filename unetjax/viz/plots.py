"""The pictures a person looks at: learning curves and prediction grids."""
import functools
import os

import numpy as np

from unetjax.runtime import history


@functools.cache
def pyplot():
  """matplotlib.pyplot on the Agg backend (files, never a window), imported
  on the first drawing: that is at the first evaluation, and the import
  (0.3-0.4 s) need not come before the first train step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def learning_curves(records: list[dict[str, float]], metrics: list[str],
                    path: str, steps: tuple[int, int] | None = None,
                    title: str = "") -> None:
  """One panel per metric, train and val together, optionally a step range."""
  compare_curves({"": records}, metrics, path, steps, title)


def compare_curves(runs: dict[str, list[dict[str, float]]],
                   metrics: list[str], path: str,
                   steps: tuple[int, int] | None = None,
                   title: str = "") -> None:
  """`learning_curves` of several runs overlaid, one colour per run: train
  as a line, val as dots on a thin line. One legend entry per run, beside
  the plots, so eight trials do not cover the curves; losses on a log
  scale, where a run near 1e-4 and one at 2.3 both stay readable."""
  several = len(runs) > 1
  fig, axes = pyplot().subplots(1, len(metrics), figsize=(
      5 * len(metrics) + (2.2 if several else 0), 3.8), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    positive = True
    for run, (name, records) in enumerate(runs.items()):
      color = f"C{run % 10}" if several else None
      for split, style in (("train", "-"), ("val", "o-")):
        x, y = history.series(records, f"{split}/{metric}")
        if steps is not None:
          keep = (x >= steps[0]) & (x <= steps[1])
          x, y = x[keep], y[keep]
        if len(x):
          positive &= bool(np.all(y > 0))
          ax.plot(x, y, style, color=color, markersize=3,
                  linewidth=1.5 if split == "train" else 0.6,
                  label=(split if not several else
                         name if split == "train" else None))
    if metric.endswith("loss") and positive and ax.lines:
      ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(metric)
    ax.grid(alpha=0.3)
    if not several:
      ax.legend()
  if several:
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="center right",
               fontsize=8, frameon=False)
  if title:
    fig.suptitle(title)
  _save(fig, path, rect=(0, 0, 1 - 2.1 / fig.get_figwidth(), 1)
        if several else None)


def segmentation_samples(images: np.ndarray, labels: np.ndarray,
                         predictions: np.ndarray, scores: np.ndarray,
                         path: str, score_name: str = "Dice",
                         row_titles: list[str] | None = None) -> np.ndarray:
  """Rows of image | label | prediction; returns the figure as RGB pixels."""
  rows = len(images)
  fig, axes = pyplot().subplots(rows, 3, figsize=(7.5, 2.5 * rows),
                                squeeze=False)
  for i in range(rows):
    image = images[i]
    image = image[..., 0] if image.shape[-1] == 1 else image
    panels = ((image, "image"), (labels[i], "label"),
              (predictions[i], f"prediction, {score_name} {scores[i]:.3f}"))
    for ax, (picture, name) in zip(axes[i], panels):
      ax.imshow(picture, cmap="gray", vmin=0, vmax=1 if name != "label" else
                max(1, int(labels.max())), interpolation="nearest")
      ax.set_title(name if not row_titles else f"{row_titles[i]}: {name}",
                   fontsize=8)
      ax.axis("off")
  return _save(fig, path)


def confusion_matrix(counts: np.ndarray, class_names: list[str], path: str,
                     title: str = "") -> np.ndarray:
  """Counts, rows the true class, shaded by their share of the row.

  The shading is per-class recall, so a weak class stands out even when the
  classes are unbalanced. Returns the figure as RGB pixels.
  """
  counts = np.asarray(counts)
  size = max(4.0, 1.5 + 0.45 * len(counts))
  fig, ax = pyplot().subplots(figsize=(size, size))
  shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
  ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
  for (i, j), count in np.ndenumerate(counts):
    ax.text(j, i, f"{count:.0f}", ha="center", va="center", fontsize=7,
            color="white" if shares[i, j] > 0.5 else "black")
  ticks = range(len(counts))
  ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
  ax.set_yticks(ticks, class_names, fontsize=7)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title, fontsize=9)
  return _save(fig, path)


def multiclass_samples(images: np.ndarray, labels: np.ndarray,
                       predictions: np.ndarray, class_names: tuple[str, ...],
                       scores: np.ndarray, path: str) -> np.ndarray:
  """Rows of image | label | prediction in class colours, with a legend."""
  import matplotlib as mpl  # pylint: disable=g-import-not-at-top
  plt = pyplot()
  colors = plt.get_cmap("tab10").colors[:len(class_names)]
  cmap = mpl.colors.ListedColormap(colors)
  rows = len(images)
  fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
  for i in range(rows):
    image = images[i]
    _show(axes[i, 0], image[..., 0] if image.shape[-1] == 1 else image, "image")
    for ax, mask, name in ((axes[i, 1], labels[i], "label"), (
        axes[i, 2], predictions[i], f"prediction, accuracy {scores[i]:.3f}")):
      ax.imshow(mask, cmap=cmap, vmin=-0.5, vmax=len(class_names) - 0.5,
                interpolation="nearest")
      _show(ax, None, name)
  axes[0, 2].legend(handles=[mpl.patches.Patch(color=c, label=n)
                             for c, n in zip(colors, class_names)],
                    loc="upper right", fontsize=6, framealpha=0.8)
  return _save(fig, path)


def colorization_samples(gray: np.ndarray, truth: np.ndarray,
                         predictions: np.ndarray, scores: np.ndarray,
                         path: str) -> np.ndarray:
  """Rows of grayscale input | true colour | predicted colour, with PSNR."""
  rows = len(gray)
  fig, axes = pyplot().subplots(rows, 3, figsize=(7.5, 2.5 * rows),
                                squeeze=False)
  for i in range(rows):
    _show(axes[i, 0], gray[i][..., 0], "grayscale input")
    _show(axes[i, 1], truth[i], "truth")
    _show(axes[i, 2], predictions[i], f"prediction, PSNR {scores[i]:.2f} dB")
  return _save(fig, path)


def image_grid(images: list[np.ndarray], titles: list[str], path: str,
               columns: int) -> np.ndarray:
  """Images (gray or RGB in [0, 1]) in rows of `columns`, each titled."""
  rows = -(-len(images) // columns)
  fig, axes = pyplot().subplots(rows, columns,
                                figsize=(2.6 * columns, 3.3 * rows),
                                squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for ax, image, title in zip(axes.flat, images, titles):
    _show(ax, image[..., 0] if image.shape[-1] == 1 else image, title)
  return _save(fig, path)


def _show(ax, picture, title: str) -> None:
  """An image panel (gray or RGB in [0, 1]) without axes."""
  if picture is not None:
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.set_title(title, fontsize=8)
  ax.axis("off")


def save_figure(fig, path: str) -> np.ndarray:
  """Writes the figure as a PNG (atomically) and returns its RGB pixels."""
  return _save(fig, path)


def _save(fig, path: str, rect=None) -> np.ndarray:
  """Writes the figure (laid out inside `rect`, fractions of the figure:
  left, bottom, right, top) and returns its pixels."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.tight_layout(rect=rect)
  fig.canvas.draw()
  pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, path)
  pyplot().close(fig)
  return pixels
