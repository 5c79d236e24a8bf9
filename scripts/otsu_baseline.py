"""Otsu-threshold Dice on a binary segmentation config's split.

  python scripts/otsu_baseline.py --config configs/cells.py --split val
"""
from absl import app, flags
from ml_collections import config_flags

from unetjax import data as datasets
from unetjax.tasks import baselines

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cells.py",
                                          "Experiment config.")
_SPLIT = flags.DEFINE_string("split", "val", "Split to score.")


def main(argv):
  del argv
  dataset = datasets.build(_CONFIG.value)
  scores = baselines.otsu_dice(dataset.split(_SPLIT.value))
  print(f"Otsu on {_CONFIG.value.data.name}/{_SPLIT.value}: Dice over the set "
        f"{scores['dice']:.4f}, mean per-image Dice "
        f"{scores['dice_per_image']:.4f}")


if __name__ == "__main__":
  app.run(main)
