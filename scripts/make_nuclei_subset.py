"""Rebuilds the embedded `nuclei` subset from a DSB 2018 folder, the same way.

    python scripts/make_nuclei_subset.py ../shared/data/dsb2018 \
        unetjax/data/nuclei_data

How images are chosen (the same folder always gives the same subset):
1. candidates: 256x256 images stored gray or with R = G = B, fluorescent
   (nuclei brighter on average than the background), whose masks pass every
   check of the `dsb2018` loader without overlapping, with at least
   `--min_nuclei` nuclei and at least two nuclei touching another one
   (4-connected neighbours of different ids);
2. variety: the candidates sorted by median nucleus area (a proxy for
   magnification and cell type) are cut into `--bins` groups of equal
   size, and from each group the images with the most touching nuclei are
   taken (ties by image id), `--count` images in all.
Writes `images/<id>.png` (8-bit gray), `instances/<id>.png` (16-bit ids
1..n, 0 = background, numbered in mask file-name order), `manifest.csv`
and `ATTRIBUTION` (with the ids); `README.md` is written by hand.
"""
import argparse
import csv
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from unetjax.data import (
  dsb2018,  # pylint: disable=g-import-not-at-top,wrong-import-position
  image_io,  # pylint: disable=g-import-not-at-top,wrong-import-position
)
from unetjax.runtime.errors import DataError  # pylint: disable=g-import-not-at-top,wrong-import-position

ATTRIBUTION = """\
Nuclei images and annotations in this folder are a subset of the 2018 Data
Science Bowl stage 1 training set (Broad Institute, Carpenter lab), with the
community corrections of the "kaggle-dsbowl-2018-dataset-fixes" set.

License: CC0 1.0 (public domain dedication), for the data and the fixes.

Cite: Caicedo, J. C. et al. Nucleus segmentation across imaging experiments:
the 2018 Data Science Bowl. Nature Methods 16, 1247-1253 (2019).

Changes: each image converted to 8-bit gray (its R channel; the originals
are RGBA with R = G = B and an opaque alpha); its per-nucleus masks combined
into one 16-bit instance map (nucleus k of the sorted mask file names = id
k). Chosen by scripts/make_nuclei_subset.py.

Image ids ({count}):
{ids}
"""


def touching(instances: np.ndarray) -> int:
  """Number of nuclei with a 4-neighbour pixel of another nucleus."""
  ids = set()
  for a, b in ((instances[1:], instances[:-1]),
               (instances[:, 1:], instances[:, :-1])):
    where = (a != b) & (a > 0) & (b > 0)
    ids.update(np.unique(a[where]).tolist())
    ids.update(np.unique(b[where]).tolist())
  return len(ids)


def candidates(directory: str, min_nuclei: int) -> list[dict]:
  found = []
  examples = dsb2018.find_examples(directory)
  for image_id in sorted(examples):
    image_path, masks = examples[image_id]
    pixels = image_io.read_pixels(image_path)
    if pixels.shape[:2] != (256, 256) or pixels.dtype != np.uint8 or (
        not image_io.is_gray(pixels)) or len(masks) < min_nuclei:
      continue
    try:
      image, instances = dsb2018.load_example(image_path, masks, 1, "error")
    except DataError as e:
      print(f"skipped: {e}", file=sys.stderr)
      continue
    inside = instances > 0
    if image[inside].mean() <= image[~inside].mean():
      continue  # not fluorescence: nuclei darker than the background
    areas = np.bincount(instances.ravel())[1:]
    count = touching(instances)
    if count >= 2:
      found.append(dict(id=image_id, image=image[..., 0],
                        instances=instances, nuclei=len(masks),
                        touching=count, median_area=float(np.median(areas))))
  return found


def choose(found: list[dict], count: int, bins: int) -> list[dict]:
  by_area = sorted(found, key=lambda c: (c["median_area"], c["id"]))
  groups = np.array_split(np.arange(len(by_area)), bins)
  quotas = [len(q) for q in np.array_split(np.arange(count), bins)]
  chosen = []
  for group, quota in zip(groups, quotas):
    members = sorted((by_area[i] for i in group),
                     key=lambda c: (-c["touching"], c["id"]))
    chosen += members[:quota]
  return sorted(chosen, key=lambda c: c["id"])


def write(chosen: list[dict], out: str) -> None:
  for sub in ("images", "instances"):
    os.makedirs(os.path.join(out, sub), exist_ok=True)
    for name in os.listdir(os.path.join(out, sub)):
      os.remove(os.path.join(out, sub, name))
  for c in chosen:
    Image.fromarray(c["image"]).save(
        os.path.join(out, "images", f"{c['id']}.png"), optimize=True)
    Image.fromarray(c["instances"].astype(np.uint16)).save(
        os.path.join(out, "instances", f"{c['id']}.png"), optimize=True)
  with open(os.path.join(out, "manifest.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "nuclei", "touching", "median_area"])
    for c in chosen:
      writer.writerow([c["id"], c["nuclei"], c["touching"],
                       f"{c['median_area']:.1f}"])
  with open(os.path.join(out, "ATTRIBUTION"), "w") as f:
    f.write(ATTRIBUTION.format(count=len(chosen),
                               ids="\n".join(c["id"] for c in chosen)))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("dsb_dir")
  parser.add_argument("out")
  parser.add_argument("--count", type=int, default=80)
  parser.add_argument("--bins", type=int, default=8)
  parser.add_argument("--min_nuclei", type=int, default=8)
  args = parser.parse_args(argv)
  found = candidates(args.dsb_dir, args.min_nuclei)
  if len(found) < args.count:
    sys.exit(f"error: only {len(found)} candidates for --count={args.count}")
  chosen = choose(found, args.count, args.bins)
  write(chosen, args.out)
  size = sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(args.out) for name in names)
  print(f"{len(found)} candidates, {len(chosen)} chosen, "
        f"{sum(c['nuclei'] for c in chosen)} nuclei "
        f"({sum(c['touching'] for c in chosen)} touching), "
        f"{size / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
  main()
