"""Every config under configs/ loads, and every trial of every sweep in it
resolves to a config whose keys exist and whose values the model, dataset
and task accept: a sweep can never fail on a typo after hours of others.

Generic: a new config file, or a new sweep in one, is covered without
touching this file.
"""
import functools
import glob
import importlib.util
import inspect
import json
import os

import jax
import pytest
from flax import nnx

from unetjax import data as datasets
from unetjax import models, sweep, tasks
from unetjax.runtime import config as config_lib
from unetjax.viz import sweep_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if not p.endswith("__init__.py"))


def _module(path):
  config_lib.make_siblings_importable(path)
  spec = importlib.util.spec_from_file_location("_config_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _sweeps():
  for path in CONFIGS:
    module = _module(path)
    for name in getattr(module, "get_sweeps", dict)():
      yield os.path.basename(path), name


@functools.cache
def _abstract_params(model_json: str, dtype: str) -> int:
  """Builds the model abstractly (no memory, no compute): its checks run."""
  config = config_lib.ml_collections.ConfigDict(
      {"model": json.loads(model_json), "dtype": dtype,
       "param_dtype": "float32"})
  model = nnx.eval_shape(lambda: models.build(
      config, in_channels=3, num_outputs=3, rngs=nnx.Rngs(0)))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def check_registry_options(config) -> int:
  """The data and task options exist for the named dataset and task, and
  the model builds; returns the model's parameter count (3 in, 3 out)."""
  builder = datasets.DATASETS.get(config.data.name)
  accepted = set(inspect.signature(builder).parameters)
  for key in config_lib.section_kwargs(config.data):
    assert key in accepted, f"data.{key} is not an option of {builder}"
  task_cls = tasks.TASKS.get(config.task.name)
  accepted = set(inspect.signature(task_cls.__init__).parameters)
  for key in config_lib.section_kwargs(config.task):
    assert key in accepted, f"task.{key} is not an option of {task_cls}"
  return _abstract_params(
      json.dumps(config.model.to_dict(), sort_keys=True), config.dtype)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_validates(path):
  config = sweep.resolve(path, [], os.path.basename(path))
  assert check_registry_options(config) > 0


@pytest.mark.parametrize("config_name,sweep_name", list(_sweeps()))
def test_every_sweep_dry_runs(config_name, sweep_name, tmp_path, capsys):
  path = os.path.join(REPO, "configs", config_name)
  trials = sweep.load_trials(path, sweep_name)  # resolves every trial
  assert trials, "a sweep without trials"
  for trial in trials:
    check_registry_options(trial.config)
    for key, value in trial.overrides.items():
      assert config_lib.lookup(trial.config, key) == (
          tuple(value) if isinstance(value, list) else value), key
  _, columns = sweep.load_sweep(path, sweep_name)
  sweep_report.check_columns(columns, {k for t in trials for k in t.overrides})
  root = tmp_path / "root"
  assert sweep.run_sweep(path, sweep_name, str(root), dry_run=True) == []
  printed = capsys.readouterr().out.splitlines()
  assert len(printed) == len(trials) and not root.exists()


# The comparisons the workloads make (issue 18), each a named sweep.
EXPECTED = {
    ("mnist_cnn.py", "variants"): [
        "mlp", "cnn", "cnn_pool_first", "cnn_sigmoid", "cnn_adam_lr0.01",
        "cnn_adam_lr1e-3", "cnn_adam_bn", "cnn_adam_bn_steplr", "cnn_bn",
        "cnn_bn_steplr"],
    ("mnist_cnn.py", "bn_steplr_recipes"): [
        "adam_lr1e-3", "adam_lr1e-3_step1_gamma0.7", "sgd_lr0.1",
        "sgd_lr0.05"],
    ("mnist_mlp.py", "mlp_vs_cnn"): ["mlp", "cnn"],
    ("isbi2012.py", "models"): ["standard", "standard_addition",
                                "dilated_addition", "dilated_no_addition"],
    ("isbi2012.py", "folds"): [f"fold{k}" for k in range(6)],
    ("warwick.py", "batchnorm"): ["no_batchnorm", "batchnorm"],
    ("warwick.py", "batch_size"): ["batch4", "batch16"],
    ("warwick.py", "steplr_step"): ["steplr_step5", "steplr_step20"],
    ("pets_unet.py", "adam_lr"): ["adam_lr1e-3", "adam_lr1e-4"],
    ("pets_unet.py", "unet_vs_fcn32"): ["unet", "fcn32"],
    ("pets_fcn32.py", "unet_vs_fcn32"): ["unet", "fcn32"],
    ("pets_colorize.py", "skips"): ["skips", "no_skips"],
}


@pytest.mark.parametrize("config_name,sweep_name", sorted(EXPECTED))
def test_the_workloads_comparisons_are_defined(config_name, sweep_name):
  path = os.path.join(REPO, "configs", config_name)
  trials = sweep.load_trials(path, sweep_name)
  assert [t.name for t in trials] == EXPECTED[config_name, sweep_name]


def test_mnist_variants_recipe_and_what_each_changes():
  path = os.path.join(REPO, "configs", "mnist_cnn.py")
  trials = {t.name: t.config for t in sweep.load_trials(path, "variants")}
  for config in trials.values():  # the workload's recipe in every trial
    assert (config.batch_size, config.num_epochs) == (128, 40)
    assert config.eval_every_steps == 55_000 // 128  # once per epoch
  assert trials["mlp"].model.name == "mlp"
  assert trials["cnn"].optimizer.name == "sgd"
  assert trials["cnn"].optimizer.learning_rate == 0.01
  assert trials["cnn_pool_first"].model.order == "conv_pool_act"
  assert trials["cnn_sigmoid"].model.activation == "sigmoid"
  assert trials["cnn_adam_lr0.01"].optimizer.learning_rate == 0.01
  adam = trials["cnn_adam_bn_steplr"]
  assert (adam.optimizer.name, adam.optimizer.learning_rate) == ("adam", 1e-3)
  assert adam.model.batchnorm and adam.schedule.name == "step"
  assert not trials["cnn_adam_bn"].schedule.name == "step"
  best = trials["cnn_bn_steplr"]  # the lr chosen by bn_steplr_recipes
  assert (best.optimizer.name, best.optimizer.learning_rate) == ("sgd", 0.05)
  assert best.optimizer.momentum == 0.9 and best.model.batchnorm
  assert (best.schedule.name, best.schedule.step_size_epochs,
          best.schedule.gamma) == ("step", 10, 0.2)
  assert trials["cnn_bn"].schedule.name != "step"
  assert trials["cnn_bn"].optimizer.learning_rate == 0.05
  recipes = {t.name: t.config for t in sweep.load_trials(
      path, "bn_steplr_recipes")}
  assert recipes["sgd_lr0.05"].to_dict() == best.to_dict()
  assert recipes["adam_lr1e-3"].to_dict() == adam.to_dict()
  assert recipes["sgd_lr0.1"].optimizer.learning_rate == 0.1
  step1 = recipes["adam_lr1e-3_step1_gamma0.7"].schedule
  assert (step1.step_size_epochs, step1.gamma) == (1, 0.7)


def test_isbi_models_standard_addition_has_the_standard_parameters():
  path = os.path.join(REPO, "configs", "isbi2012.py")
  trials = {t.name: t.config for t in sweep.load_trials(path, "models")}
  count = {name: check_registry_options(config)
           for name, config in trials.items()}
  assert count["standard"] == count["standard_addition"]
  assert count["dilated_addition"] == count["dilated_no_addition"]
  assert trials["dilated_no_addition"].model.addition is False
  assert trials["standard_addition"].model.addition is True
