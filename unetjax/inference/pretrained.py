"""Models shipped inside the package: `unetjax-predict --model nuclei`.

A shipped model is a folder under `unetjax/inference/weights/<name>/`:
`model.json` (what the model and its task are built from: the config, the
dataset's facts, how images became model input, and where the weights
came from) and `weights.npz` (the model's variables, parameters and
BatchNorm statistics, keyed by their path in the module, stored as
float16 to keep the package small; restored as float32), beside its
`MODEL_CARD.md` (data, split, command, held-out scores, licence), and
`metrics.json` (the test split's scores of the checkpoint shipped) and the
run's `plots/samples.png`, which an export of it (`unetjax-export --model
nuclei`) describes.

Only the model is shipped, not the optimizer's moments (three times the
size, and of no use for applying the model), so a shipped model is loaded
here rather than through a workdir's Orbax checkpoint; `save` writes one
from a training run's workdir (`scripts/ship_model.py`). Loading builds the
model abstractly (no initialisation is computed) and fills it with the
stored arrays, each checked against the shape the config gives.
"""
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
from flax import nnx

from unetjax import models, tasks
from unetjax.data import DataInfo, normalize
from unetjax.inference import trained
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError, WorkdirError

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
NAMES = ("nuclei",)
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
CARD_FILE = "MODEL_CARD.md"
METRICS_FILE = "metrics.json"
COVER_FILE = os.path.join("plots", "samples.png")
VERSION = 1


def shipped(model: str) -> bool:
  """Whether `--model` names a shipped model: one of `NAMES`, given as a
  bare name that is not also a file or folder here (write `./nuclei` for
  a folder of that name)."""
  return model in NAMES and not os.path.exists(model)


def folder(name: str) -> str:
  if name not in NAMES:
    raise ConfigError(f"--model={name!r}: no such shipped model; shipped: "
                      f"{', '.join(NAMES)}")
  return os.path.join(FOLDER, name)


def load(name: str) -> trained.Trained:
  """The shipped model `name` and its task, ready for `segment`."""
  return load_folder(folder(name))


def load_folder(where: str) -> trained.Trained:
  """The model saved in the folder `where` (by `save`) and its task."""
  meta_path = os.path.join(where, MODEL_FILE)
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{meta_path}: cannot read the shipped model's "
                       f"description: {e}") from None
  if not isinstance(meta, dict) or meta.get("unetjax_pretrained") != VERSION:
    raise WorkdirError(f"{meta_path}: not a version-{VERSION} shipped-model "
                       "description")
  config = config_lib.base_config()
  config.update(meta["config"])
  config_lib.validate(config)
  info = DataInfo(**{**meta["data_info"], "class_names": tuple(
      meta["data_info"]["class_names"])})
  task = tasks.build(config, info)
  abstract = nnx.eval_shape(lambda: models.build(
      config, in_channels=tasks.model_in_channels(task, info),
      num_outputs=task.num_outputs, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  state = _filled(state, os.path.join(where, WEIGHTS_FILE))
  return trained.Trained(config, info, task, graphdef, state,
                         int(meta["step"]), normalize.check(meta["input"]))


def _filled(state, path: str):
  """`state` (abstract) with every array read from `path`, checked."""
  flat = nnx.to_flat_state(state)
  try:
    stored = np.load(path)
  except OSError as e:
    raise WorkdirError(f"{path}: cannot read the shipped weights: {e}"
                       ) from None
  with stored:
    keys = {_key(p): p for p, _ in flat}
    if set(stored.files) != set(keys):
      missing = sorted(set(keys) - set(stored.files))
      extra = sorted(set(stored.files) - set(keys))
      raise WorkdirError(f"{path}: the weights do not fit the model: "
                         f"missing {missing[:3]}, unexpected {extra[:3]}")
    values = []
    for p, variable in flat:
      array = stored[_key(p)]
      if array.shape != variable.value.shape:
        raise WorkdirError(f"{path}: {_key(p)} has shape {array.shape}; "
                           f"the model needs {variable.value.shape}")
      values.append((p, variable.replace(jnp.asarray(
          array, variable.value.dtype))))
  return nnx.from_flat_state(values)


def _key(path) -> str:
  return "/".join(str(part) for part in path)


def save(workdir: str, where: str, *, checkpoint: str = "best",
         source: str = "") -> list[str]:
  """Writes a model to ship, from a training run's checkpoint, into the
  folder `where`: model.json and the float16 weights.npz (refused if a
  value does not fit float16). `source` says where the run came from (the
  commit, the command). Returns the files written."""
  run = trained.load(workdir, checkpoint)
  model = run.model()
  os.makedirs(where, exist_ok=True)
  arrays = {}
  for p, variable in nnx.to_flat_state(nnx.state(model)):
    value = np.asarray(variable.value)
    if np.issubdtype(value.dtype, np.floating):
      if np.abs(value).max(initial=0) > np.finfo(np.float16).max:
        raise ConfigError(f"{_key(p)}: values beyond float16's range")
      value = value.astype(np.float16)
    arrays[_key(p)] = value
  weights = os.path.join(where, WEIGHTS_FILE)
  np.savez_compressed(weights, **arrays)
  meta = {"unetjax_pretrained": VERSION, "source": source,
          "step": int(run.step), "config": run.config.to_dict(),
          "data_info": {"name": run.info.name,
                        "num_classes": run.info.num_classes,
                        "in_channels": run.info.in_channels,
                        "class_names": list(run.info.class_names),
                        "instances": run.info.instances},
          "input": dict(run.input)}
  meta_path = os.path.join(where, MODEL_FILE)
  _write_json(meta_path, meta)
  written = [meta_path, weights]
  # What an export of the shipped model describes: the held-out scores of
  # the checkpoint shipped, and the run's samples as the cover.
  scores = _test_scores(workdir, run.step)
  if scores:
    _write_json(os.path.join(where, METRICS_FILE),
                {"step": int(run.step), "test": scores})
    written.append(os.path.join(where, METRICS_FILE))
  if os.path.exists(os.path.join(workdir, COVER_FILE)):
    os.makedirs(os.path.join(where, os.path.dirname(COVER_FILE)),
                exist_ok=True)
    shutil.copyfile(os.path.join(workdir, COVER_FILE),
                    os.path.join(where, COVER_FILE))
    written.append(os.path.join(where, COVER_FILE))
  return written


def _test_scores(workdir: str, step: int) -> dict:
  """The test split's scores of checkpoint `step`: the run's metrics.json
  when it ended there, else `unetjax-evaluate --split test`'s file for
  that checkpoint; {} when neither has them (a model shipped without
  held-out scores says so in its export)."""
  for path, key, at in (
      (os.path.join(workdir, METRICS_FILE), "test", "step"),
      (os.path.join(workdir, "eval", f"eval_test_{step}.json"), "metrics",
       "checkpoint_step")):
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        found = json.load(f)
      if found.get(at) == step and found.get(key):
        return {k: v for k, v in found[key].items()
                if isinstance(v, (int, float))}
  return {}


def _write_json(path: str, value) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1, default=list)
    f.write("\n")
