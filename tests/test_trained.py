"""A trained run rebuilt from its workdir without its data (`trained.load`)."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from unetjax import data as datasets
from unetjax.inference import trained
from unetjax.runtime.errors import WorkdirError


@pytest.fixture
def workdir(trained_workdir, tmp_path):
  copy = str(tmp_path / "wd")
  shutil.copytree(trained_workdir, copy)
  return copy


def _leaves(state):
  return [np.asarray(jax.random.key_data(x)
                     if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                     else x) for x in jax.tree.leaves(state)]


def test_the_trainer_saves_what_the_model_was_built_from(workdir):
  with open(os.path.join(workdir, "experiment.json")) as f:
    facts = json.load(f)
  # tiny_cells_config: 8 one-channel training images, batch 4, 6 steps.
  assert facts == {
      "data_info": {"name": "cells", "num_classes": 2, "in_channels": 1,
                    "class_names": ["background", "cell"],
                    "instances": False},
      "steps_per_epoch": 2, "num_steps": 6,
      "input": {"normalize": "scale", "percentiles": [1.0, 99.8],
                "channels": 1}}


def test_load_restores_the_same_state_without_reading_the_data(
    workdir, monkeypatch):
  experiment, state, step = trained.restore_experiment(workdir, "latest")

  def no_data(config):
    raise AssertionError(f"dataset {config.data.name} was built")
  monkeypatch.setattr(datasets, "build", no_data)
  run = trained.load(workdir, "latest")
  assert run.step == step == 6
  assert run.info == experiment.dataset.info
  assert type(run.task) is type(experiment.task)
  assert jax.tree.structure(run.state) == jax.tree.structure(state)
  for a, b in zip(_leaves(run.state), _leaves(state), strict=True):
    np.testing.assert_array_equal(a, b)
  image = np.random.default_rng(0).random((1, 16, 16, 1), np.float32)
  outputs = []
  for graphdef, restored in ((run.graphdef, run.state),
                             (experiment.graphdef, state)):
    model, _ = nnx.merge(graphdef, restored)
    model.eval()
    outputs.append(np.asarray(model(image)))
  np.testing.assert_array_equal(*outputs)
  assert run.input == {"normalize": "scale", "percentiles": [1.0, 99.8]}


def test_the_recorded_input_handling_is_what_predict_uses(workdir):
  """Predict normalises as experiment.json says, not as the config file
  (or today's default) would; a bad record is named."""
  path = os.path.join(workdir, "experiment.json")
  with open(path) as f:
    facts = json.load(f)
  facts["input"] = {"normalize": "percentile", "percentiles": [2, 98],
                    "channels": 1}
  with open(path, "w") as f:
    json.dump(facts, f)
  run = trained.load(workdir, "latest")
  assert run.input == {"normalize": "percentile", "percentiles": [2.0, 98.0]}
  facts["input"] = {"normalize": "zscore", "percentiles": [2, 98]}
  with open(path, "w") as f:
    json.dump(facts, f)
  with pytest.raises(WorkdirError, match="'input': data.normalize='zscore'"):
    trained.load(workdir, "latest")


def test_a_workdir_without_the_facts_is_rebuilt_from_its_data(
    workdir, monkeypatch):
  os.remove(os.path.join(workdir, "experiment.json"))
  built = []
  real_build = datasets.build
  monkeypatch.setattr(datasets, "build",
                      lambda config: built.append(1) or real_build(config))
  run = trained.load(workdir, "best")
  assert built and run.info.in_channels == 1


GOOD = {"data_info": {"name": "cells", "num_classes": 2, "in_channels": 1,
                      "class_names": ["background", "cell"],
                      "instances": False},
        "steps_per_epoch": 2, "num_steps": 6}


@pytest.mark.parametrize("text, expected", [
    ("{not json", "is unreadable"),
    ("[1, 2]", "holds a JSON list"),
    (json.dumps({**GOOD, "data_info": {"name": "cells"}}),
     "'data_info' must be an object with keys"),
    (json.dumps({**GOOD, "steps_per_epoch": 0}),
     "'steps_per_epoch' must be a positive integer; got 0"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "num_steps"}),
     "'num_steps' must be a positive integer; got None"),
    (json.dumps({**GOOD, "data_info": {**GOOD["data_info"],
                                       "num_classes": "2"}}),
     "data_info.num_classes must be a positive integer; got '2'"),
])
def test_a_bad_facts_file_is_one_line_naming_it(workdir, text, expected):
  path = os.path.join(workdir, "experiment.json")
  with open(path, "w") as f:
    f.write(text)
  with pytest.raises(WorkdirError) as error:
    trained.load(workdir, "latest")
  message = str(error.value)
  assert path in message and expected in message and "\n" not in message
