"""The evaluate tool against what training logged for the same checkpoint."""
import csv
import json
import os
import shutil

import pytest

from unetjax import evaluate
from unetjax.runtime.errors import CheckpointError


def test_metrics_equal_the_final_ones_training_logged(trained_workdir,
                                                      tmp_path):
  with open(os.path.join(trained_workdir, "metrics.json")) as f:
    logged = json.load(f)
  for split in ("val", "test"):
    report = evaluate.evaluate_workdir(trained_workdir, checkpoint="latest",
                                       split=split, out=str(tmp_path),
                                       num_examples=2)
    assert report["checkpoint_step"] == logged["step"]
    assert report["metrics"] == pytest.approx(logged[split], rel=1e-5)
  step = logged["step"]
  with open(tmp_path / f"eval_test_{step}.json") as f:
    assert json.load(f)["num_examples"] == 3
  with open(tmp_path / f"examples_val_{step}.csv") as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["id"] for r in rows) == [f"val_{i:05d}" for i in range(5)]
  scores = [float(r["dice_per_image"]) for r in rows]
  assert scores == sorted(scores)  # worst first
  mean = sum(scores) / len(scores)
  assert mean == pytest.approx(logged["val"]["dice_per_image"], rel=1e-5)
  for kind in ("worst", "best"):
    assert os.path.exists(tmp_path / f"{kind}_val_{step}" / "samples.png")


def test_missing_or_corrupt_checkpoints_are_clear_errors(trained_workdir,
                                                         tmp_path):
  with pytest.raises(CheckpointError, match="'999' not in"):
    evaluate.evaluate_workdir(trained_workdir, checkpoint="999",
                              out=str(tmp_path))
  broken = tmp_path / "wd"
  shutil.copytree(trained_workdir, broken)
  os.rename(broken / "checkpoints", tmp_path / "moved")
  with pytest.raises(CheckpointError, match="no checkpoint"):
    evaluate.evaluate_workdir(str(broken), out=str(tmp_path / "o"))
  os.rename(tmp_path / "moved", broken / "checkpoints")
  step = max(int(s) for s in os.listdir(broken / "checkpoints")
             if s.isdigit())
  for root, _, files in os.walk(broken / "checkpoints" / str(step) / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with pytest.raises(CheckpointError, match="cannot be restored"):
    evaluate.evaluate_workdir(str(broken), checkpoint=str(step),
                              out=str(tmp_path / "o"))
  assert not (tmp_path / "o").exists()
