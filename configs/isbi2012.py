"""ISBI-2012 EM membrane segmentation with a standard U-Net (~2.7M params).

Reproduces the usual ISBI-2012 baseline: a SAME-padded U-Net of depth 4
(19, 38, 76, 152, 304 features, BatchNorm: 2,738,186 parameters) trained
on random 256x256 crops of 25 slices with flips and 90-degree turns, Adam
under a triangular cyclical learning rate from 1e-5 to 1e-2 (two cycles of
300 steps).
Validation: the last 5 slices (fold 5 of 6), whole 512x512 slices.
Elastic deformation (--config.augment.elastic=True) helps longer runs; it
is off here because on 2 CPU cores it competes with training for time.

Expect val Dice (cell interior, over the set) of 0.95 after about 250
steps and 0.952 at step 300, the end of the first cycle (measured on 2 CPU
cores: step 250 at 13 minutes on a mostly idle machine, at 49 on a heavily
shared one; docs/microscopy.md). Predicting "cell interior" everywhere scores
0.8895 on these slices, so only figures well above that mean anything.

Data: ../shared/data/isbi2012 (per-slice PNGs) or the official
train-volume.tif / train-labels.tif from
https://imagej.net/events/isbi-2012-segmentation-challenge

  python -m unetjax.main --config configs/isbi2012.py \\
      --config.data.dir=../shared/data/isbi2012 --workdir workdirs/isbi

Sweep `models`, the dilated U-Net papers' four-model table at one budget:

  python -m unetjax.sweep --config configs/isbi2012.py --sweep models \\
      --root workdirs/sweeps/isbi --set data.dir=../shared/data/isbi2012

standard (this file); standard with the bottleneck outputs added (its two
3x3 convs written as the dilated bottleneck with dilation rate 1 and depth
2, i.e. the same convs and parameter count, their outputs summed);
dilated with addition (configs/isbi2012_dilated.py) and without. Where
the workload is silent: every trial keeps this file's training recipe.
`sweep folds` trains this model on each of the 6 folds (`data.fold`).
"""
from unetjax.runtime.config import base_config


def get_config():
  config = base_config()
  # dilate, dilate_rate, dilate_depth, addition: the U-Net's defaults (off
  # without dilate), listed so the `models` sweep can set them.
  config.model = dict(name="unet", depth=4, features=19, batchnorm=True,
                      dilate=False, dilate_rate=2, dilate_depth=4,
                      addition=True)
  config.data = dict(name="isbi2012", train_examples=0, dir="",
                     val_slices=(), fold=5, num_folds=6)
  config.task = dict(name="binary_segmentation", dice_weight=0.5)
  config.optimizer.learning_rate = 1e-5
  config.schedule.name = "triangular"
  config.schedule.max_learning_rate = 1e-2
  config.schedule.half_cycle_steps = 150
  config.augment.crop_size = 256
  config.augment.flip = True
  config.augment.rot90 = True
  config.batch_size = 4
  config.eval_batch_size = 5
  config.num_steps = 600
  config.log_every_steps = 20
  config.eval_every_steps = 50
  config.best_metric = "val/dice"
  config.best_mode = "max"
  return config


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  added = {"model.dilate": True, "model.dilate_rate": 1,
           "model.dilate_depth": 2, "model.addition": True}
  return {
      "models": [
          {"trial": "standard"},
          {"trial": "standard_addition", **added},
          {"trial": "dilated_addition", "config": "isbi2012_dilated.py"},
          {"trial": "dilated_no_addition", "config": "isbi2012_dilated.py",
           "model.addition": False},
      ],
      "folds": [{"trial": f"fold{fold}", "data.fold": fold}
                for fold in range(6)],
  }


def get_sweep_columns():
  """The workload's table: size, then train and val loss and Dice."""
  columns = ["num_params", "train_seconds", "train/loss", "val/loss",
             "train/dice", "val/dice"]
  return {"models": columns, "folds": columns}
