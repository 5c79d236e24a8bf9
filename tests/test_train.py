"""The training path end to end, on a tiny version of the default experiment."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np

from tests.conftest import REPO, tiny_cells_config
from unetjax.data import input_pipeline
from unetjax.runtime import history
from unetjax.training import experiment as experiment_lib
from unetjax.training import health as health_lib
from unetjax.training import parallel, train
from unetjax.training import steps as steps_lib


def _params(workdir, step):
  """Flat parameter arrays of the checkpoint at `step`."""
  from unetjax.runtime import checkpointing  # pylint: disable=g-import-not-at-top
  experiment = experiment_lib.build_experiment(_saved_config(workdir))
  mngr = checkpointing.manager(workdir, keep=5, best_metric="val/dice",
                               best_mode="max", read_only=True)
  state, _ = checkpointing.restore(mngr, step, experiment.state)
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def _saved_config(workdir):
  from unetjax.runtime import config as config_lib  # pylint: disable=g-import-not-at-top
  saved = config_lib.load_saved(workdir)
  config = tiny_cells_config()
  config.update_from_flattened_dict(
      {k: tuple(v) if isinstance(v, list) else v
       for k, v in config_lib.flat_items(saved.to_dict()).items()})
  return config


def test_one_train_step_lowers_the_loss_on_a_fixed_batch():
  experiment = experiment_lib.build_experiment(tiny_cells_config())
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
  # Not a terminal: no bar, a plain line per log point and evaluation.
  lines = ok.stdout.splitlines()
  assert lines[0].startswith("Training unet (") and "for 2 steps" in lines[0]
  assert re.fullmatch(r"step 1/2: train loss \d\.\d{4}, [\d.]+ steps/s, "
                      r"0m\d\ds left", lines[1]), lines
  assert re.fullmatch(r"step 2/2: val loss \d\.\d{4}, dice \d\.\d{4}, "
                      r"accuracy \d\.\d{4}", lines[3]), lines
  # No library INFO lines (the TPU backend on CPU, CLU's metric dumps) in
  # the terminal; all of them in train.log, the config in config.json.
  assert "libtpu" not in ok.stderr and "] [2] " not in ok.stderr
  assert not [line for line in ok.stderr.splitlines()  # absl's Python lines
              if re.match(r"I\d{4} [\d:.]+ +\d+ \w+\.py:\d+\]", line)
              ], ok.stderr[-2000:]
  log = (tmp_path / "wd" / "train.log").read_text()
  assert "Model unet:" in log and "First train step done." in log
  assert re.search(r"\] \[2\] val/accuracy=[\d.]+, val/dice=", log)
  verbose = subprocess.run(
      command[:-1] + [str(tmp_path / "wd2"), "--verbosity=0"] + overrides,
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert "First train step done." in verbose.stderr
  assert "\r" not in ok.stderr + ok.stdout  # no bar drawn
  bad = subprocess.run(command + ["--config.modle.depth=3"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0
  assert "modle" in bad.stderr


def test_importing_the_writers_hides_the_gpus_from_tensorflow_first():
  """CLU's writer starts TensorFlow's runtime, after which the GPUs can no
  longer be hidden from it (it would take their memory from JAX): importing
  `writers` goes through `imports.tensorflow()` first."""
  code = ("from unetjax.runtime import imports\n"
          "assert imports.tensorflow.cache_info().currsize == 0\n"
          "from unetjax.training import writers\n"
          "print(imports.tensorflow.cache_info().currsize)\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split() == ["1"]


def test_tensorflow_is_imported_without_keras_which_still_loads_on_use():
  """`imports.tensorflow()` keeps Keras (and scikit-learn, which it
  imports) out of TensorFlow's import; `tf.data` works, `tf.keras` still
  loads Keras when used, and a Keras the process already had is left as
  it is."""
  fresh = ("import sys\n"
           "from unetjax.runtime import imports\n"
           "tf = imports.tensorflow()\n"
           "print('keras' in sys.modules, 'sklearn' in sys.modules)\n"
           "print(list(tf.data.Dataset.range(3).map(lambda x: 2 * x)"
           ".as_numpy_iterator()))\n"
           "print(tf.keras.callbacks.Callback.__module__.split('.')[0])\n")
  had = ("import sys, keras\n"
         "from unetjax.runtime import imports\n"
         "imports.tensorflow()\n"
         "print(sys.modules['keras'] is keras)\n")
  outputs = []
  for code in (fresh, had):
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs.append(done.stdout.splitlines())
  assert outputs[0] == ["False False", "[np.int64(0), np.int64(2), "
                        "np.int64(4)]", "keras"]
  assert outputs[1] == ["True"]


def test_initialize_gives_the_modules_graph_and_the_eager_values():
  """One traced program initialises the model and optimizer: the graph
  definition kept from that trace is the one an abstract build gives, and
  the values are those of building the modules eagerly, op by op."""
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from unetjax import models  # pylint: disable=g-import-not-at-top
  config = tiny_cells_config()

  def create():
    model = models.build(config, in_channels=1, num_outputs=2,
                         rngs=nnx.Rngs(params=3, dropout=4))
    return model, nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  def structure(graphdef):  # each create() has an optax chain of its own
    return graphdef.nodes, [(k, type(v.value) if k == "tx" else v)
                            for k, v in graphdef.attributes]

  graphdef, state = experiment_lib.initialize(create)
  abstract_graphdef, abstract_state = nnx.split(nnx.eval_shape(create))
  assert structure(graphdef) == structure(abstract_graphdef)
  eager_graphdef, eager_state = nnx.split(create())
  assert structure(graphdef) == structure(eager_graphdef)
  traced, eager = jax.tree.leaves(state), jax.tree.leaves(eager_state)
  assert len(traced) == len(eager) == len(jax.tree.leaves(abstract_state))
  assert len(traced) > 10
  for got, want in zip(traced, eager):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
  merged, _ = nnx.merge(graphdef, state)
  assert models.count_params(merged) == models.count_params(
      nnx.merge(eager_graphdef, eager_state)[0])


def test_a_terminal_gets_a_progress_bar_with_rate_and_time_left(tmp_path):
  """On a TTY (a pseudo-terminal here) tqdm draws the bar: steps done of
  all, steps/s and the time left; evaluation lines are printed above it."""
  import pty  # pylint: disable=g-import-not-at-top
  import select  # pylint: disable=g-import-not-at-top
  overrides = [f"--config.{k}" for k in (
      "model.depth=2", "model.features=4", "data.image_size=16",
      "data.num_train=8", "data.num_val=4", "data.num_test=4",
      "batch_size=4", "eval_batch_size=4", "num_steps=4",
      "eval_every_steps=4", "log_every_steps=2", "num_sample_images=1")]
  import fcntl  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  import termios  # pylint: disable=g-import-not-at-top
  leader, follower = pty.openpty()
  fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
  process = subprocess.Popen(
      [sys.executable, "-m", "unetjax.main", "--config", "configs/cells.py",
       "--workdir", str(tmp_path / "wd"), *overrides], cwd=REPO,
      stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
  os.close(follower)
  chunks = []
  while True:
    ready, _, _ = select.select([leader], [], [], 1.0)
    if ready:
      try:
        data = os.read(leader, 65536)
      except OSError:  # the terminal closed: the process ended
        break
      if not data:
        break
      chunks.append(data)
    elif process.poll() is not None:
      break
  assert process.wait(timeout=300) == 0
  os.close(leader)
  screen = b"".join(chunks).decode(errors="replace")
  assert re.search(r"train: +100%.*\| 4/4 \[[\d:]+<00:00, +[\d.]+step/s",
                   screen), screen[-2000:]
  assert re.search(r"step 4/4: val loss \d\.\d{4}, dice", screen)
  assert "step 2/4: train loss" not in screen  # the bar, not lines
