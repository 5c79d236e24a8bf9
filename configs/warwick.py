"""Warwick GlaS gland segmentation: U-Net trained on the soft Dice loss.

Reproduces the GlaS U-Net experiments: a depth-4 SAME U-Net (32 base
features, 7,760,097 parameters) on RGB H&E images, loss 1 - soft Dice, Adam
3e-4 with StepLR (gamma 0.2 every 5 epochs), random 256x256 crops with
flips, turns and elastic deformation. Splits: train (85 images) trains,
testA (60) is `val` (evaluated during training, picks the best
checkpoint), testB (20) is `test`, scored once at the end. Evaluation runs
on whole images (padded to a common size; padding never scored).

The compared settings, as overrides:
  --config.model.batchnorm=True             BatchNorm after every conv
  --config.batch_size=8                     (default 4)
  --config.schedule.step_size_epochs=20     StepLR step 20 instead of 5

Expect val/test Dice (gland, over the set) around 0.85 after 60 epochs;
a GPU is advisable (the images are 775x522).

Data: the GlaS release (train_1.bmp, train_1_anno.bmp, testA_*, testB_*)
from https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/

  python -m unetjax.main --config configs/warwick.py \\
      --config.data.dir=/path/to/Warwick_QU_Dataset --workdir workdirs/glas

The same comparisons as sweeps (`--set data.dir=...` for every trial):
`batchnorm` (off, on), `batch_size` (4, 16), `steplr_step` (StepLR every
5 or every 20 epochs, gamma 0.2) and `all` (the baseline and each change
alone). Where the workload is silent: a batch of 16 logs every 5 steps and
evaluates every 25 (85 images make 5 steps an epoch, so every 5 epochs, as
the batch of 4 does with 105 steps).

  python -m unetjax.sweep --config configs/warwick.py --sweep all \\
      --root workdirs/sweeps/glas --set data.dir=/path/to/Warwick_QU_Dataset
"""
from unetjax.runtime.config import base_config


def get_config():
  config = base_config()
  config.model = dict(name="unet", depth=4, features=32, batchnorm=False)
  config.data = dict(name="glas", train_examples=0, dir="", val_split="testA")
  config.task = dict(name="binary_segmentation", bce_weight=0.0,
                     dice_weight=1.0)
  config.optimizer.learning_rate = 3e-4
  config.schedule.name = "step"
  config.schedule.gamma = 0.2
  config.schedule.step_size_epochs = 5
  config.augment.crop_size = 256
  config.augment.flip = True
  config.augment.rot90 = True
  config.augment.elastic = True
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_steps = 0
  config.num_epochs = 60
  config.log_every_steps = 21
  config.eval_every_steps = 105
  config.best_metric = "val/dice"
  config.best_mode = "max"
  return config


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  batchnorm = {"trial": "batchnorm", "model.batchnorm": True}
  batch16 = {"trial": "batch16", "batch_size": 16, "log_every_steps": 5,
             "eval_every_steps": 25}
  step20 = {"trial": "steplr_step20", "schedule.step_size_epochs": 20}
  return {
      "batchnorm": [{"trial": "no_batchnorm", "model.batchnorm": False},
                    batchnorm],
      "batch_size": [{"trial": "batch4", "batch_size": 4,
                      "log_every_steps": 21, "eval_every_steps": 105},
                     batch16],
      "steplr_step": [{"trial": "steplr_step5",
                       "schedule.step_size_epochs": 5}, step20],
      "all": [{"trial": "baseline"}, batchnorm, batch16, step20],
  }


def get_sweep_columns():
  """Dice on testA (val, during training) and testB (test, at the end)."""
  columns = ["num_params", "train_seconds", "train/loss", "val/loss",
             "train/dice", "val/dice", "test/dice"]
  return {name: columns for name in get_sweeps()}
