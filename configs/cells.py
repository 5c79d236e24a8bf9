"""Synthetic fluorescence cells: a U-Net on generated touching blobs.

Needs no download. 64x64 images of touching cells under uneven
illumination, where a global Otsu threshold fails; a small U-Net
(depth 3, 16 base features, BatchNorm) learns to segment them.

  python -m unetjax.main --config configs/cells.py --workdir workdirs/cells
"""
from unetjax.runtime.config import base_config


def get_config():
  config = base_config()
  config.model = dict(name="unet", depth=3, features=16, batchnorm=True)
  config.data = dict(name="cells", train_examples=0, image_size=64,
                     num_train=512, num_val=64, num_test=64, seed=0)
  config.task = dict(name="binary_segmentation", dice_weight=0.0)
  config.optimizer.learning_rate = 3e-3
  config.schedule.name = "cosine"
  config.augment.flip = True
  config.augment.rot90 = True
  config.batch_size = 16
  config.num_steps = 800
  config.log_every_steps = 50
  config.eval_every_steps = 200
  config.best_metric = "val/dice"
  config.best_mode = "max"
  return config


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  return {
      "batchnorm": [{"model.batchnorm": True}, {"model.batchnorm": False}],
      "lr_batch": {"optimizer.learning_rate": [1e-3, 3e-3, 1e-2],
                   "batch_size": [8, 16]},
  }
