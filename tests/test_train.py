"""The training path end to end, on a tiny version of the default experiment."""
import json
import os
import subprocess
import sys

import jax
import numpy as np

from tests.conftest import REPO, tiny_cells_config
from unetjax import history, input_pipeline, parallel, train
from unetjax import health as health_lib, steps as steps_lib


def _params(workdir, step):
  """Flat parameter arrays of the checkpoint at `step`."""
  from unetjax import checkpointing  # pylint: disable=g-import-not-at-top
  experiment = train.build_experiment(_saved_config(workdir))
  mngr = checkpointing.manager(workdir, keep=5, best_metric="val/dice",
                               best_mode="max", read_only=True)
  state, _ = checkpointing.restore(mngr, step, experiment.state)
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def _saved_config(workdir):
  from unetjax import config as config_lib  # pylint: disable=g-import-not-at-top
  saved = config_lib.load_saved(workdir)
  config = tiny_cells_config()
  config.update_from_flattened_dict(
      {k: tuple(v) if isinstance(v, list) else v
       for k, v in config_lib.flat_items(saved.to_dict()).items()})
  return config


def test_one_train_step_lowers_the_loss_on_a_fixed_batch():
  experiment = train.build_experiment(tiny_cells_config())
  steps = steps_lib.jit_steps(experiment)
  split = experiment.dataset.split("train")
  local = next(input_pipeline.eval_batches(split, batch_size=4))
  batch = parallel.global_batch({k: local[k] for k in ("image", "label")},
                                parallel.data_sharding(experiment.mesh))
  state = experiment.state
  losses = []
  for _ in range(3):
    metrics = experiment.task.metrics_class.empty()
    state, metrics, _ = steps.train(state, metrics,
                                    health_lib.initial_health(), batch)
    losses.append(float(metrics.compute()["loss"]))
  assert losses[2] < losses[0]


def test_training_writes_everything_and_resume_continues_exactly(tmp_path):
  full = str(tmp_path / "full")
  final = train.train_and_evaluate(tiny_cells_config(num_steps=6), full)
  for name in ("config.json", "metrics.json", "model_summary.txt",
               "history.jsonl", "plots/learning_curves.png",
               "plots/samples.png"):
    assert os.path.exists(os.path.join(full, name)), name
  assert sorted(int(s) for s in os.listdir(os.path.join(full, "checkpoints"))
                if s.isdigit()) == [3, 6]
  with open(os.path.join(full, "metrics.json")) as f:
    saved = json.load(f)
  assert saved["val"] == final["val"] and "test" in saved
  assert saved["num_params"] > 0

  # Stop at step 3, then resume to 6: same parameters, same metrics. (The
  # default cosine schedule depends on num_steps, so stopping early by
  # lowering num_steps would change the learning rates.)
  split_run = str(tmp_path / "split")
  train.train_and_evaluate(tiny_cells_config(num_steps=3), split_run)
  resumed = train.train_and_evaluate(tiny_cells_config(num_steps=6), split_run)
  assert resumed["val"] == final["val"]
  for a, b in zip(_params(full, 6), _params(split_run, 6)):
    np.testing.assert_array_equal(a, b)
  steps_logged = [r["step"] for r in history.read(split_run)
                  if "train/loss" in r]
  assert steps_logged == [2, 3, 4, 6]


def test_cli_trains_and_rejects_an_unknown_override(tmp_path):
  overrides = [f"--config.{k}" for k in (
      "model.depth=2", "model.features=4", "data.image_size=16",
      "data.num_train=8", "data.num_val=4", "data.num_test=4",
      "batch_size=4", "eval_batch_size=4", "num_steps=2",
      "eval_every_steps=2", "log_every_steps=1", "num_sample_images=1")]
  command = [sys.executable, "-m", "unetjax.main", "--config",
             "configs/cells.py", "--workdir", str(tmp_path / "wd")]
  ok = subprocess.run(command + overrides, cwd=REPO, capture_output=True,
                      text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "Final val metrics" in ok.stdout
  bad = subprocess.run(command + ["--config.modle.depth=3"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0
  assert "modle" in bad.stderr


def test_importing_the_writers_hides_the_gpus_from_tensorflow_first():
  """CLU's writer starts TensorFlow's runtime, after which the GPUs can no
  longer be hidden from it (it would take their memory from JAX): importing
  `writers` goes through `input_pipeline.tensorflow()` first."""
  code = ("from unetjax import input_pipeline\n"
          "assert input_pipeline.tensorflow.cache_info().currsize == 0\n"
          "from unetjax import writers\n"
          "print(input_pipeline.tensorflow.cache_info().currsize)\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split() == ["1"]
