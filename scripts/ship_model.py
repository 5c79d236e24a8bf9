"""Writes a shipped model (`unetjax/inference/weights/<name>/`) from a run.

  python scripts/ship_model.py --workdir W --name nuclei \\
      --data_dir ../shared/data/dsb2018 --source "commit abc123, ..."

Saves the run's best checkpoint as model.json + float16 weights.npz
(`unetjax.inference.pretrained.save`) and records in model.json which of
the package's embedded nuclei images lie in the run's held-out test split
(the DSB split of its config, from `--data_dir`): the shipped model's test
checks those, images its training never saw. The model card
(MODEL_CARD.md) is written by hand from the run's measured scores.
"""
import argparse
import csv
import json
import os

from unetjax.data import dsb2018
from unetjax.inference import pretrained, trained


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--name", required=True, choices=pretrained.NAMES)
  parser.add_argument("--data_dir", required=True,
                      help="the DSB folder the run was trained from")
  parser.add_argument("--checkpoint", default="best")
  parser.add_argument("--source", default="",
                      help="where the run came from: commit, command")
  args = parser.parse_args()
  where = pretrained.folder(args.name)
  written = pretrained.save(args.workdir, where, checkpoint=args.checkpoint,
                            source=args.source)
  config = trained.saved_config(args.workdir).data
  root = os.path.join(args.data_dir, "stage1_train")
  ids = sorted(os.listdir(root))
  test = set(dsb2018.split_ids(ids, config.val_fraction, config.test_fraction,
                               config.split_seed,
                               config.get("max_images", 0))["test"])
  manifest = os.path.join(os.path.dirname(dsb2018.__file__), "nuclei_data",
                          "manifest.csv")
  with open(manifest, encoding="utf-8") as f:
    embedded = [row["id"] for row in csv.DictReader(f)]
  meta_path = os.path.join(where, pretrained.MODEL_FILE)
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  meta["embedded_test_ids"] = sorted(test.intersection(embedded))
  with open(meta_path, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
    f.write("\n")
  for path in written:
    print(f"{path}: {os.path.getsize(path):,} bytes")
  print(f"{len(meta['embedded_test_ids'])} embedded images in the test split")


if __name__ == "__main__":
  main()
