"""Sweeps: one row per trial, finished trials skipped, failures recorded."""
import csv
import os
import textwrap

from unetjax import sweep

CONFIG = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    import conftest

    def get_config():
      return conftest.tiny_cells_config(num_steps=2, eval_every_steps=2)

    def get_sweeps():
      return {{"demo": [{{"model.features": 2}},
                        {{"model.depth": 0}}],
               "grid": {{"optimizer.learning_rate": [0.1, 0.2],
                         "batch_size": [4, 8]}}}}
''')


def _config(tmp_path):
  path = tmp_path / "sweep_config.py"
  path.write_text(CONFIG.format(tests=os.path.dirname(__file__)))
  return str(path)


def test_a_product_sweep_expands_in_order(tmp_path, capsys):
  config = _config(tmp_path)
  assert sweep.load_trials(config, "grid") == [
      {"optimizer.learning_rate": 0.1, "batch_size": 4},
      {"optimizer.learning_rate": 0.1, "batch_size": 8},
      {"optimizer.learning_rate": 0.2, "batch_size": 4},
      {"optimizer.learning_rate": 0.2, "batch_size": 8}]
  assert sweep.run_sweep(config, "grid", str(tmp_path / "r"),
                         dry_run=True) == []
  printed = capsys.readouterr().out.splitlines()
  assert len(printed) == 4
  assert printed[1].endswith("--config.optimizer.learning_rate=0.1 "
                             "--config.batch_size=8")
  assert not (tmp_path / "r").exists()


def test_sweep_tabulates_survives_a_failure_and_skips_finished(tmp_path):
  config, root = _config(tmp_path), tmp_path / "root"
  rows = sweep.run_sweep(config, "demo", str(root), parallel=2)
  good, bad = rows
  assert good["trial"] == "model.features=2" and good["status"] == "done"
  assert good["num_params"] > 0 and good["step"] == 2
  assert "val/dice" in good and "train/loss" in good
  assert bad["status"].startswith("failed (exit 1: error: model.depth=0")
  with open(root / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["trial"] for r in table] == [good["trial"], bad["trial"]]
  assert float(table[0]["val/loss"]) == good["val/loss"]
  assert (root / "results.md").read_text().count("\n") == 4
  finished = os.path.getmtime(root / "model.features=2" / "metrics.json")
  again = sweep.run_sweep(config, "demo", str(root))
  assert again[0] == good and again[1]["status"] == bad["status"]
  assert os.path.getmtime(
      root / "model.features=2" / "metrics.json") == finished
