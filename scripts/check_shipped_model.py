"""Does the shipped (float16) model predict what its run (float32) does?

  python scripts/check_shipped_model.py --workdir W --name nuclei \\
      --images 'DIR/test/original/*.png' --masks DIR/test/masks --out /tmp/c

Segments the images twice, with the run's best checkpoint and with the
shipped model (`unetjax-predict --model NAME`), scores both sets of
objects against the instance maps in --masks (`<id>.tif`, as
`unetjax-benchmark --instances` writes its split) with the package's
metric, and prints both scores and how many mask pixels and objects agree.
"""
import argparse
import glob
import json
import os

import numpy as np
import tifffile
from PIL import Image

from unetjax.inference import pretrained, segment
from unetjax.instances import metrics


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--name", required=True, choices=pretrained.NAMES)
  parser.add_argument("--images", required=True)
  parser.add_argument("--masks", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  runs = {"workdir": dict(workdir=args.workdir),
          "shipped": dict(workdir=f"the shipped model {args.name!r}",
                          loader=lambda: pretrained.load(args.name))}
  for name, kwargs in runs.items():
    segment.predict_files(pattern=args.images,
                          output=os.path.join(args.out, name),
                          instances=True, overwrite=True, **kwargs)
  names = sorted(os.path.basename(p)[:-4] for p in glob.glob(args.images))
  scores = {name: [] for name in runs}
  mask_agree = objects_agree = objects = 0
  for image_id in names:
    truth = tifffile.imread(os.path.join(args.masks, f"{image_id}.tif"))
    found = {}
    for name in runs:
      found[name] = np.asarray(Image.open(os.path.join(
          args.out, name, f"{image_id}_instances.png"))).astype(np.int32)
      scores[name].append(metrics.image_scores(truth, found[name]))
    mask_agree += int(((found["workdir"] > 0) == (found["shipped"] > 0))
                      .sum())
    pairs = metrics.image_scores(found["workdir"], found["shipped"],
                                 thresholds=(0.9,))
    objects_agree += int(pairs["tp"][0])
    objects += pairs["num_true"]
  pixels = sum(tifffile.imread(os.path.join(args.masks, f"{i}.tif")).size
               for i in names)
  report = {name: {k: round(v, 4) for k, v in
                   metrics.split_scores(rows).items()
                   if k in ("challenge_score", "ap50", "f1_50")}
            for name, rows in scores.items()}
  report["images"] = len(names)
  report["mask_pixels_agreeing"] = mask_agree / pixels
  report["run_objects_matched_at_iou_0.9"] = f"{objects_agree}/{objects}"
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
