"""Non-learned baselines that give a trained model's score its meaning."""
import numpy as np
from skimage.filters import threshold_otsu

from unetjax.data import Split


def otsu_dice(split: Split) -> dict[str, float]:
  """Dice of a global Otsu threshold per image (bright = foreground).

  Returns Dice over the set (pixels pooled) and the mean per-image Dice,
  with the package's convention that an empty truth and prediction score 1.
  Each image at its true size (`read`): padding never shifts a threshold,
  and a split on disk scores as the same split in memory.
  """
  intersection = sizes = 0.0
  per_image = []
  for index in range(len(split)):
    example = split.read(index)
    image, label = example["image"], example["label"]
    gray = image.astype(np.float32).mean(axis=-1)
    pred = gray > threshold_otsu(gray)
    truth = label > 0
    inter, size = float((pred & truth).sum()), float(pred.sum() + truth.sum())
    intersection += inter
    sizes += size
    per_image.append(2 * inter / size if size else 1.0)
  return {"dice": 2 * intersection / sizes if sizes else 1.0,
          "dice_per_image": float(np.mean(per_image))}
