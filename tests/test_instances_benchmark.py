"""`unetjax-benchmark --instances`: the package's side end to end on a tiny
DSB-layout set, the peers skipped where they are not installed."""
import json
import os
import sys

import numpy as np
import pytest
from test_instance_task import _write_kaggle_layout

from unetjax import benchmark
from unetjax.benchmarks import instances


def test_scores_of_perfect_and_empty_predictions(tmp_path):
  import tifffile  # pylint: disable=g-import-not-at-top
  truth = np.zeros((10, 10), np.int32)
  truth[1:4, 1:4], truth[6:9, 6:9] = 1, 2
  (tmp_path / "test" / "masks").mkdir(parents=True)
  tifffile.imwrite(tmp_path / "test" / "masks" / "a.tif", truth)
  tifffile.imwrite(tmp_path / "test" / "masks" / "b.tif", truth)
  pred = tmp_path / "pred"
  pred.mkdir()
  tifffile.imwrite(pred / "a.tif", truth)
  one = np.where(truth == 1, 5, 0).astype(np.int32)  # object 2 missed
  tifffile.imwrite(pred / "b.tif", one)
  data = {"dir": str(tmp_path), "ids": {"test": ["a", "b"]}}
  scores = instances.score_predictions(data, str(pred))["scores"]
  # per image: 1 and 1/2 (TP 1, FN 1); pooled: 3 TP, 1 FN -> 3/4
  assert scores["ap50"] == pytest.approx(0.75)
  assert scores["ap50_pooled"] == pytest.approx(0.75)
  assert scores["f1_50"] == pytest.approx(6 / 7)
  tifffile.imwrite(pred / "b.tif", np.zeros((10, 12), np.int32))
  assert "shape" in instances.score_predictions(data, str(pred))["error"]


def test_package_side_runs_without_the_peers(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("UNETJAX_CACHE_DIR", str(tmp_path / "cache"))
  _write_kaggle_layout(tmp_path / "dsb", count=8, size=32)
  out = tmp_path / "bench"
  sets = [f"data.dir={tmp_path / 'dsb'}", "data.channels=1",
          "data.val_fraction=0.25", "data.test_fraction=0.25",
          "model.depth=2", "model.features=8", "augment.crop_size=0",
          "augment.rot90=False", "batch_size=4", "eval_batch_size=4",
          "task.min_size=0", "eval_every_steps=4", "log_every_steps=2"]
  argv = ["--instances", "--minutes", "3", "--package-steps", "4",
          "--peer-python", sys.executable, "--out", str(out),
          "--json", str(tmp_path / "r.json")]
  for s in sets:
    argv += ["--set", s]
  benchmark.main(argv)
  with open(tmp_path / "r.json") as f:
    report = json.load(f)
  assert report["split"] == {"train": 4, "val": 2, "test": 2}
  peers_here = all(report["peer_versions"].get(p) for p in instances.PEERS)
  rows = {row["tool"]: row for row in report["rows"]}
  assert set(rows) == ({"unetjax"} | (set(instances.PEERS)
                                      if peers_here else set()))
  row = rows["unetjax"]
  assert row["steps"] == 4 and row["params"] > 0, row
  assert 0 <= row["scores"]["ap50"] <= 1
  assert row["scores"]["num_images"] == 2
  for image_id in ("img00", "img01", "img02", "img03", "img04", "img05",
                   "img06", "img07"):
    split = [k for k, v in report_ids(out).items() if image_id in v][0]
    assert os.path.exists(out / "data" / split / "masks" / f"{image_id}.tif")
  printed = capsys.readouterr()
  assert "| unetjax | 3 | 4 |" in printed.out
  if not peers_here:
    assert "skipped" in printed.err


def report_ids(out):
  return {split: os.listdir(out / "data" / split / "masks")
          and [n[:-4] for n in os.listdir(out / "data" / split / "masks")]
          for split in ("train", "val", "test")}
