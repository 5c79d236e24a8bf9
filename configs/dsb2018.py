"""Touching nuclei told apart: instance segmentation on the 2018 Data
Science Bowl stage 1 training set (598 images, about 26,000 nuclei;
fluorescence, brightfield and H&E tissue from 256x256 to 1388x1040).

A U-Net (depth 4, 16 base features, BatchNorm, SAME padding) trained from
scratch on random 256x256 crops with flips and 90-degree turns, predicting
three classes per pixel: background, nucleus interior, nucleus boundary
(the boundary from the instance maps, class-weighted 1 : 1 : 3 so the thin
boundary between touching nuclei counts). Objects are the connected
components of the interior, grown back over the boundary. Held out: 10% of
the images for validation (best checkpoint by the challenge score) and 10%
for test, drawn by image id with `data.split_seed`; whole images, scored at
their native size with the challenge's own metric (mean over IoU
thresholds 0.5..0.95 of TP / (TP + FP + FN), then over images), AP and F1
at IoU 0.5, and the GlaS object Dice and Hausdorff.

  python -m unetjax.main --config configs/dsb2018.py \\
      --config.data.dir=../shared/data/dsb2018 --workdir workdirs/dsb2018

`python -m unetjax.sweep --config configs/dsb2018.py --sweep approaches
--root sweeps/dsb2018 --set data.dir=../shared/data/dsb2018` compares the
ways from pixels to objects on the same split and budget (see
get_sweeps). Results and timings: docs/instances.md.
"""
from unetjax.runtime.config import base_config


def get_config():
  config = base_config()
  config.model = dict(name="unet", depth=4, features=16, batchnorm=True)
  config.data = dict(name="dsb2018", train_examples=0, dir="", channels=3,
                     val_fraction=0.1, test_fraction=0.1, split_seed=0,
                     overlaps="later", train_max_side=512)
  config.task = dict(name="instances", target="three_class",
                     objects="components", class_weights=(1.0, 1.0, 3.0),
                     min_size=8, watershed_min_distance=10)
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-3
  config.schedule.name = "cosine"
  config.augment.crop_size = 256
  config.augment.flip = True
  config.augment.rot90 = True
  config.batch_size = 8
  config.eval_batch_size = 2  # whole images up to 1040x1388: memory
  config.num_steps = 1600
  config.log_every_steps = 50
  config.eval_every_steps = 400
  config.best_metric = "val/challenge_score"
  config.best_mode = "max"
  config.num_sample_images = 4
  return config


_APPROACHES = {
    # the naive baseline: a pixel mask, then connected components
    "binary_components": {"task.target": "binary",
                          "task.objects": "components",
                          "task.class_weights": ()},
    "binary_watershed": {"task.target": "binary",
                         "task.objects": "watershed",
                         "task.class_weights": ()},
    "three_class_components": {"task.target": "three_class",
                               "task.objects": "components"},
    "weight_map_components": {"task.target": "weight_map",
                              "task.objects": "components",
                              "task.class_weights": ()},
    # StarDist's star-convex polygons (32 rays, its default), objects by
    # polygon NMS at its default thresholds (probability 0.5, IoU 0.4);
    # distances in pixels as StarDist's, or 8 px per output unit, which
    # learnt them sooner on small synthetic runs (docs/instances.md)
    "star_polygons": {"task.target": "star", "task.objects": "polygons",
                      "task.class_weights": (), "task.n_rays": 32,
                      "task.star_distance_scale": 1.0},
    "star_polygons_scale8": {"task.target": "star",
                             "task.objects": "polygons",
                             "task.class_weights": (), "task.n_rays": 32,
                             "task.star_distance_scale": 8.0},
}


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`: the ways from
  pixels to objects, same split, model and number of steps."""
  return {"approaches": [dict(trial) for trial in _APPROACHES.values()]}


def get_sweep_columns():
  """The table of the approaches sweep: the held-out scores that matter."""
  return {"approaches": ["task.target", "task.objects",
                         "task.star_distance_scale", "num_params",
                         "train_seconds", "val/challenge_score", "val/ap50",
                         "test/challenge_score", "test/ap50", "test/f1_50",
                         "test/dice"]}
