"""U-Net on Oxford-IIIT Pet trimaps: 3-class segmentation (pet / background /
border) at 128x128, the TensorFlow segmentation tutorial's setting.

A U-Net (depth 4, 32 base features, BatchNorm, SAME padding), softmax CE,
Adam at 1e-3 (try `--config.optimizer.learning_rate=1e-4`: slower, smoother
curves). 3,312 training images (90% of TFDS's train split), 368 for
validation, 3,669 test. Not run here (no download); what to expect, from
the TensorFlow tutorial's U-Net on the same data: pixel accuracy near 0.9
after ~20 epochs, the border class by far the hardest. Compare with configs/pets_fcn32.py. Needs the TFDS
download (about 800 MB) once; configs/cells3_unet.py runs without it.

  python -m unetjax.main --config configs/pets_unet.py --workdir workdirs/pets_unet

Sweeps: `adam_lr` (Adam at 1e-3 and 1e-4) and `unet_vs_fcn32` (this U-Net
and configs/pets_fcn32.py, each at its own image size and otherwise the
same training), e.g.

  python -m unetjax.sweep --config configs/pets_unet.py --sweep unet_vs_fcn32 \\
      --root workdirs/sweeps/pets
"""
from unetjax.runtime.config import base_config


def get_config():
  config = base_config()
  config.model = dict(name="unet", depth=4, features=32, batchnorm=True)
  config.data = dict(name="oxford_iiit_pet", train_examples=0,
                     image_size=128, binary=False, val_percent=10,
                     data_dir="")
  config.task = dict(name="segmentation", dice_weight=0.0)
  config.optimizer.learning_rate = 1e-3
  config.augment.flip = True
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_epochs = 20
  config.num_steps = 0
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.best_metric = "val/mean_iou"
  config.best_mode = "max"
  return config


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  return {
      "adam_lr": [{"trial": "adam_lr1e-3", "optimizer.learning_rate": 1e-3},
                  {"trial": "adam_lr1e-4", "optimizer.learning_rate": 1e-4}],
      "unet_vs_fcn32": [{"trial": "unet"},
                        {"trial": "fcn32", "config": "pets_fcn32.py"}],
  }


def get_sweep_columns():
  columns = ["num_params", "train_seconds", "train/loss", "val/loss",
             "val/accuracy", "val/mean_iou", "test/mean_iou"]
  return {name: columns for name in get_sweeps()}
