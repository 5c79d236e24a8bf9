"""Times the host-side instance maths on real 2018 Data Science Bowl images.

    PYTHONPATH=. python scripts/time_instance_maths.py [--dir D] [--naive] [IDS]

For each image (by default the 520x696 and the 1024x1024 fluorescence image
with the most nuclei) it combines the per-nucleus masks into one instance
map and prints the median of 5 runs of: the three-class target, the U-Net
weight map, the three-class post-processing, the watershed and the image's
instance scores (its own masks against the post-processed three-class map).
With --naive it also times the weight map computed as the formula reads,
one full-image distance transform per nucleus, and prints the largest
difference from the fast one.
"""
import argparse
import glob
import os
import time

import numpy as np
from PIL import Image
from scipy import ndimage

from unetjax.instances import metrics as instance_metrics
from unetjax.instances import postprocess as instance_postprocess
from unetjax.instances import targets as instance_targets

DEFAULT_IDS = (
    "0ea221716cf13710214dcd331a61cea48308c3940df1d28cfc7fd817c83714e1",
    "4e07a653352b30bb95b60ebc6c57afbc7215716224af731c51ff8d430788cd40",
)


def load_instances(folder: str) -> np.ndarray:
  """The image's per-nucleus masks combined into one id map (1..n)."""
  paths = sorted(glob.glob(os.path.join(folder, "masks", "*.png")))
  instances = None
  for k, path in enumerate(paths, start=1):
    mask = np.asarray(Image.open(path)) > 0
    if instances is None:
      instances = np.zeros(mask.shape, np.int32)
    instances[mask] = k
  return instances


def naive_weight_map(instances, w0=10.0, sigma=5.0):
  """w_c + w0 exp(-(d1 + d2)^2 / 2 sigma^2) with one EDT per object."""
  d1 = np.full(instances.shape, np.inf)
  d2 = np.full(instances.shape, np.inf)
  for k in range(1, int(instances.max()) + 1):
    d = ndimage.distance_transform_edt(instances != k)
    d2 = np.minimum(d2, np.maximum(d1, d))
    d1 = np.minimum(d1, d)
  fg = instances > 0
  w_c = np.where(fg, (~fg).sum() / fg.sum(), 1.0)
  return w_c + np.where(fg, 0.0, w0 * np.exp(-(d1 + d2) ** 2 / (2 * sigma**2)))


def median_seconds(fn, repeats: int = 5) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dir", default=os.path.join("..", "shared", "data",
                                                    "dsb2018"))
  parser.add_argument("--naive", action="store_true",
                      help="also time the one-EDT-per-nucleus weight map")
  parser.add_argument("ids", nargs="*", default=DEFAULT_IDS)
  args = parser.parse_args()
  for image_id in args.ids:
    instances = load_instances(os.path.join(args.dir, "stage1_train",
                                            image_id))
    classes = instance_targets.three_class(instances)
    objects = instance_postprocess.from_three_class(classes)
    timings = {
        "three_class": lambda: instance_targets.three_class(instances),
        "unet_weight_map": lambda: instance_targets.unet_weight_map(instances),
        "from_three_class": lambda: instance_postprocess.from_three_class(
            classes),
        "watershed": lambda: instance_postprocess.watershed(
            (instances > 0).astype(np.float32)),
        "image_scores": lambda: instance_metrics.image_scores(instances,
                                                              objects),
    }
    scores = instance_metrics.image_scores(instances, objects)
    print(f"{image_id[:12]} {instances.shape[0]}x{instances.shape[1]}, "
          f"{int(instances.max())} nuclei; three-class round trip: "
          f"{scores['num_pred']} objects, challenge score "
          f"{scores['challenge_score']:.3f}")
    for name, fn in timings.items():
      print(f"  {name:18s} {median_seconds(fn) * 1000:8.1f} ms")
    if args.naive:
      start = time.perf_counter()
      naive = naive_weight_map(instances)
      seconds = time.perf_counter() - start
      fast = instance_targets.unet_weight_map(instances)
      print(f"  naive weight map   {seconds * 1000:8.1f} ms (once); largest "
            f"difference from the fast one {np.abs(naive - fast).max():.2g}")


if __name__ == "__main__":
  main()
