"""The embedded default experiment: real nuclei told apart, no download.

A CC0 subset of the 2018 Data Science Bowl ships in the package
(`unetjax/datasets/nuclei_data/`, attribution there): 256x256 fluorescence
images with every nucleus annotated. A small U-Net (depth 3, 16 base
features, BatchNorm) learns three classes per pixel, background / nucleus
interior / nucleus boundary, on random 128x128 crops with flips and
90-degree turns; objects are the interior's connected components grown
back over the boundary, scored with the challenge's own metric on held-out
whole images. This is what `make run` trains.

  python -m unetjax.main --config configs/default.py --workdir workdirs/default
"""
from unetjax.runtime.config import base_config


def get_config():
  config = base_config()
  config.model = dict(name="unet", depth=3, features=16, batchnorm=True)
  config.data = dict(name="nuclei", train_examples=0, val_fraction=0.15,
                     test_fraction=0.15, split_seed=0)
  config.task = dict(name="instances", target="three_class",
                     objects="components", class_weights=(1.0, 1.0, 3.0),
                     min_size=8)
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-3
  config.schedule.name = "cosine"
  config.augment.crop_size = 128
  config.augment.flip = True
  config.augment.rot90 = True
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_steps = 600
  config.log_every_steps = 50
  config.eval_every_steps = 200
  config.best_metric = "val/challenge_score"
  config.best_mode = "max"
  config.num_sample_images = 4
  return config


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  return {
      "targets": [{"task.target": "binary", "task.class_weights": ()},
                  {"task.target": "three_class"},
                  {"task.target": "weight_map", "task.class_weights": ()}],
  }
