"""How well each post-processing recovers nuclei from a *perfect* prediction.

    PYTHONPATH=. python scripts/postprocess_ceiling.py [--dir DIR] [--first 0]
        [--count 60]

Takes the true instance maps of DSB training images (sorted ids
first..first+count-1), turns each into what a perfect model of each
approach would output (the foreground mask, the gap-separated foreground,
the three-class map) and scores the post-processed objects against the
truth: the ceiling each approach can reach, and the choice of the
watershed's `min_distance`.
"""
import argparse
import glob
import os

import numpy as np
from time_instance_maths import load_instances  # scripts/ is on sys.path

from unetjax.instances import metrics as instance_metrics
from unetjax.instances import postprocess as instance_postprocess
from unetjax.instances import targets as instance_targets


def approaches():
  ip, it = instance_postprocess, instance_targets
  yield "components(foreground)", lambda t: ip.components(t > 0)
  for d in (3, 5, 7, 10, 15, 20):
    yield f"watershed(foreground, min_distance={d})", (
        lambda t, d=d: ip.watershed((t > 0).astype(np.float32),
                                    min_distance=d))
  yield "components(separate_touching > 0)", (
      lambda t: ip.components(it.separate_touching(t) > 0))
  yield "components(separate_touching(symmetric) > 0)", (
      lambda t: ip.components(it.separate_touching(t, symmetric=True) > 0))
  yield "from_three_class(three_class)", (
      lambda t: ip.from_three_class(it.three_class(t)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dir", default=os.path.join("..", "shared", "data",
                                                    "dsb2018"))
  parser.add_argument("--first", type=int, default=0)
  parser.add_argument("--count", type=int, default=60)
  args = parser.parse_args()
  folders = sorted(glob.glob(os.path.join(args.dir, "stage1_train", "*")))
  truths = [load_instances(f)
            for f in folders[args.first:args.first + args.count]]
  print(f"{len(truths)} images, {sum(int(t.max()) for t in truths)} nuclei")
  print(f"{'approach':48s} challenge  AP50   F1@0.5  objects")
  for name, fn in approaches():
    split = instance_metrics.split_scores(
        [instance_metrics.image_scores(t, fn(t)) for t in truths])
    print(f"{name:48s} {split['challenge_score']:.3f}     "
          f"{split['ap50']:.3f}  {split['f1_50']:.3f}   "
          f"{int(split['num_pred'])}")


if __name__ == "__main__":
  main()
