"""Sweeps: one row per trial, finished trials skipped, failures recorded,
stale workdirs refused, every bad flag one line before anything is written."""
import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

from unetjax import sweep
from unetjax.runtime.errors import ConfigError

CONFIG = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    import conftest

    def get_config():
      return conftest.tiny_cells_config(num_steps=2, eval_every_steps=2,
                                        log_every_steps=1)

    def get_sweeps():
      return {{"demo": [{{"model.features": 2}},
                        {{"model.depth": 0}}],
               "named": [{{"trial": "small", "model.features": 2}},
                         {{"trial": "other", "config": "other.py"}}],
               "grid": {{"optimizer.learning_rate": [0.1, 0.2],
                         "batch_size": [4, 8]}},
               "typo": [{{"model.featurez": 2}}]}}

    def get_sweep_columns():
      return {{"named": ["num_params", "val/dice", "test/loss"]}}
''')
OTHER = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    import conftest

    def get_config():
      return conftest.tiny_cells_config(num_steps=2, eval_every_steps=2,
                                        log_every_steps=1, **{{
                                            "model.features": 3}})
''')


def _config(tmp_path):
  tests = os.path.dirname(__file__)
  (tmp_path / "other.py").write_text(OTHER.format(tests=tests))
  path = tmp_path / "sweep_config.py"
  path.write_text(CONFIG.format(tests=tests))
  return str(path)


def test_a_product_sweep_expands_in_order(tmp_path, capsys):
  config = _config(tmp_path)
  specs, columns = sweep.load_sweep(config, "grid")
  assert specs == [
      {"optimizer.learning_rate": 0.1, "batch_size": 4},
      {"optimizer.learning_rate": 0.1, "batch_size": 8},
      {"optimizer.learning_rate": 0.2, "batch_size": 4},
      {"optimizer.learning_rate": 0.2, "batch_size": 8}]
  assert columns == []
  assert sweep.run_sweep(config, "grid", str(tmp_path / "r"),
                         dry_run=True) == []
  printed = capsys.readouterr().out.splitlines()
  assert len(printed) == 4
  assert printed[1].endswith("--config.optimizer.learning_rate=0.1 "
                             "--config.batch_size=8")
  assert not (tmp_path / "r").exists()


def test_trials_resolve_as_main_would(tmp_path):
  config = _config(tmp_path)
  small, other = sweep.load_trials(config, "named",
                                   {"optimizer.learning_rate": "0.05"})
  assert (small.name, other.name) == ("small", "other")
  assert small.config.model.features == 2
  assert other.config_path == str(tmp_path / "other.py")
  assert other.config.model.features == 3
  # --set values are parsed by the key's type, as on the command line
  assert small.config.optimizer.learning_rate == 0.05
  assert small.resolved["optimizer"]["learning_rate"] == 0.05
  assert small.flags == ["--config.model.features=2",
                         "--config.optimizer.learning_rate=0.05"]


@pytest.mark.parametrize("sweep_name,common,message", [
    ("typo", {}, "--config.model.featurez: the config has no key 'featurez'"),
    ("demo", {"no_such_key": "1"},
     "--set no_such_key: the config has no key 'no_such_key'"),
    ("demo", {"model.no_such_key": "1"},
     "--set model.no_such_key: the config has no key 'no_such_key'"),
    ("demo", {"batch_size": "many"}, "batch_size"),
    ("demo", {"batch_size": "0"}, "config.batch_size=0: expected a positive"),
    ("demo", {"optimizer.learning_rate": "-1"}, "learning_rate=-1.0"),
    ("grid", {"batch_size": "4"}, "--set batch_size: sweep 'grid' compares"),
    ("nope", {}, "--sweep='nope' is not in"),
])
def test_bad_keys_and_values_fail_before_anything_is_written(
    tmp_path, sweep_name, common, message):
  config, root = _config(tmp_path), tmp_path / "root"
  with pytest.raises(ConfigError) as info:
    sweep.run_sweep(config, sweep_name, str(root), common=common)
  assert message in str(info.value) and "\n" not in str(info.value)
  assert not root.exists()


def test_set_parsing_parallel_root_and_columns_are_checked(tmp_path):
  config = _config(tmp_path)
  assert sweep.parse_set(["num_steps=3", "data.dir=a=b"]) == {
      "num_steps": "3", "data.dir": "a=b"}
  with pytest.raises(ConfigError, match="--set 'num_steps': expected key="):
    sweep.parse_set(["num_steps"])
  with pytest.raises(ConfigError, match="--set '=3': expected key=value"):
    sweep.parse_set(["=3"])
  with pytest.raises(ConfigError, match="--parallel=0: expected an integer"):
    sweep.run_sweep(config, "demo", str(tmp_path / "r"), parallel=0)
  (tmp_path / "file").write_text("x")
  with pytest.raises(ConfigError, match="--root=.*file is a file"):
    sweep.run_sweep(config, "demo", str(tmp_path / "file"))
  with pytest.raises(ConfigError, match="--columns: 'val_dice' is not a"):
    sweep.run_sweep(config, "demo", str(tmp_path / "r"),
                    columns=["val_dice"])
  assert not (tmp_path / "r").exists()


def test_sweep_tabulates_survives_a_failure_and_skips_finished(tmp_path):
  config, root = _config(tmp_path), tmp_path / "root"
  rows = sweep.run_sweep(config, "demo", str(root), parallel=2)
  good, bad = rows
  assert good["trial"] == "model.features=2" and good["status"] == "done"
  assert good["num_params"] > 0 and good["step"] == 2
  assert "val/dice" in good and "train/loss" in good and "test/loss" in good
  assert bad["status"].startswith("failed (exit 1: error: ")
  assert "model.depth=0" in bad["status"]
  with open(root / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["trial"] for r in table] == [good["trial"], bad["trial"]]
  assert float(table[0]["val/loss"]) == good["val/loss"]
  assert (root / "results.md").read_text().count("\n") == 4
  assert (root / "curves.png").stat().st_size > 0
  finished = os.path.getmtime(root / "model.features=2" / "metrics.json")
  again = sweep.run_sweep(config, "demo", str(root))
  assert again[0] == good and again[1]["status"] == bad["status"]
  assert os.path.getmtime(
      root / "model.features=2" / "metrics.json") == finished

  # A changed --set makes the old rows stale: refused, nothing touched.
  with pytest.raises(ConfigError, match=r"trial 'model.features=2': .* holds "
                     r"a different experiment \(optimizer.learning_rate: "
                     r"0.003 -> 0.5\); use a new --root"):
    sweep.run_sweep(config, "demo", str(root),
                    common={"optimizer.learning_rate": "0.5"})
  assert os.path.getmtime(
      root / "model.features=2" / "metrics.json") == finished
  # --tabulate trains nothing and says what has not run.
  listed = sweep.run_sweep(config, "demo", str(root), tabulate=True)
  assert [r["status"] for r in listed] == ["done", "not run"]
  assert listed[0] == good
  # Training longer resumes the same experiment: not finished any more.
  longer = sweep.plan(config, "demo", str(root), common={"num_steps": "4"})
  assert [t.finished for t in longer] == [False, False]
  assert [t.finished for t in sweep.plan(config, "demo", str(root))] == [
      True, False]


def test_columns_from_the_config_and_trials_from_another_file(tmp_path):
  config, root = _config(tmp_path), tmp_path / "root"
  rows = sweep.run_sweep(config, "named", str(root),
                         runner=sweep.run_in_process)
  assert [r["status"] for r in rows] == ["done", "done"]
  header = (root / "results.md").read_text().splitlines()[0]
  assert header == "| trial | status | num_params | val/dice | test/loss |"
  with open(root / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == ["trial", "status", "num_params", "val/dice",
                            "test/loss"]
  # features 2 against the other file's 3: more parameters
  assert int(table[1]["num_params"]) > int(table[0]["num_params"])
  with open(root / "other" / "config.json") as f:
    assert json.load(f)["model"]["features"] == 3
  # --columns replaces the config's; finished trials are only tabulated.
  sweep.run_sweep(config, "named", str(root), columns=["val/loss"],
                  runner=None)
  assert (root / "results.md").read_text().splitlines()[0] == (
      "| trial | status | val/loss |")


def _cli(*args):
  return subprocess.run(
      [sys.executable, "-m", "unetjax.sweep", *args], capture_output=True,
      text=True, check=False, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_cli_exit_status_and_one_line_errors(tmp_path):
  config, root = _config(tmp_path), tmp_path / "root"
  failed = _cli(f"--config={config}", "--sweep=typo", f"--root={root}")
  assert failed.returncode == 1
  assert failed.stderr.strip().splitlines() == [
      f"error: sweep 'typo' of {config}, trial 'model.featurez=2': "
      "--config.model.featurez: the config has no key 'featurez' (did you "
      "mean 'features'?)"]
  bad_set = _cli(f"--config={config}", "--sweep=demo", f"--root={root}",
                 "--set", "num_steps")
  assert bad_set.returncode == 1 and "Traceback" not in bad_set.stderr
  assert bad_set.stderr.strip().endswith("expected key=value, e.g. --set "
                                         "num_steps=100")
  assert not root.exists()
  # Every trial fails (depth 0 is refused): the sweep says so and exits 1.
  (tmp_path / "bad.py").write_text(CONFIG.format(
      tests=os.path.dirname(__file__)).replace(
          '"demo": [{"model.features": 2},', '"demo": ['))
  all_failed = _cli(f"--config={tmp_path / 'bad.py'}", "--sweep=demo",
                    f"--root={root}")
  assert all_failed.returncode == 1
  assert "1 trials, 1 failed" in all_failed.stdout


# --- the workloads whose data is not here, end to end on stand-ins ---------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"num_steps": "2", "eval_every_steps": "2", "log_every_steps": "1",
        "eval_batch_size": "2", "num_sample_images": "1"}


def _glas_files(folder):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  os.makedirs(folder)
  for part, count in (("train", 3), ("testA", 2), ("testB", 1)):
    for n in range(1, count + 1):
      height, width = 32 + 8 * (n % 2), 32
      Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)
                      ).save(os.path.join(folder, f"{part}_{n}.bmp"))
      anno = np.zeros((height, width), np.uint8)
      anno[2:10, 3:9], anno[20:30, 5:20] = 1, 7  # two glands
      Image.fromarray(anno).save(os.path.join(folder, f"{part}_{n}_anno.bmp"))
  return folder


def test_glas_sweep_runs_end_to_end_on_small_files(tmp_path):
  data = _glas_files(str(tmp_path / "glas"))
  common = {**TINY, "data.dir": data, "model.depth": "2",
            "model.features": "4", "augment.crop_size": "16",
            "augment.elastic": "False", "batch_size": "2"}
  root = tmp_path / "root"
  rows = sweep.run_sweep(os.path.join(REPO, "configs", "warwick.py"),
                         "batchnorm", str(root), common=common,
                         runner=sweep.run_in_process)
  assert [r["status"] for r in rows] == ["done", "done"]
  assert rows[1]["num_params"] > rows[0]["num_params"]  # BatchNorm's
  with open(root / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == ["trial", "status", "num_params", "train_seconds",
                            "train/loss", "val/loss", "train/dice",
                            "val/dice", "test/dice"]
  assert all(0 <= float(r["test/dice"]) <= 1 for r in table)
  assert (root / "curves.png").exists()


@pytest.fixture(name="mock_pets")
def fixture_mock_pets():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def as_dataset(self, *args, **kwargs):
    """Trimap-valued examples (the default mock's masks are random)."""
    del args, kwargs
    rng = np.random.default_rng(0)

    def examples():
      for i in range(6):
        yield {"image": rng.integers(0, 256, (40 + i, 36, 3), np.uint8),
               "segmentation_mask": rng.integers(1, 4, (20, 18 + i, 1),
                                                 np.uint8),
               "file_name": f"pet_{i}.jpg", "label": i % 37,
               "species": i % 2, "head_bbox": np.zeros(4, np.float32)}

    return tf.data.Dataset.from_generator(
        examples, output_signature=self.info.features.get_tensor_spec())

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    yield


@pytest.mark.parametrize("config_name,sweep_name,common,metric", [
    ("pets_unet.py", "unet_vs_fcn32", {"data.image_size": "32"},
     "test/mean_iou"),
    ("pets_colorize.py", "skips", {"data.image_size": "16",
                                   "model.depth": "2", "model.features": "4"},
     "test/psnr"),
])
def test_pets_sweeps_run_end_to_end_on_mock_data(
    mock_pets, tmp_path, config_name, sweep_name, common, metric):
  del mock_pets
  root = tmp_path / "root"
  rows = sweep.run_sweep(os.path.join(REPO, "configs", config_name),
                         sweep_name, str(root),
                         common={**TINY, "batch_size": "2", **common},
                         runner=sweep.run_in_process)
  assert [r["status"] for r in rows] == ["done", "done"]
  assert all(metric in r and r["step"] == 2 for r in rows)
  header = (root / "results.md").read_text().splitlines()[0]
  assert metric in header and (root / "curves.png").exists()
