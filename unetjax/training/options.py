"""Every documented option of a config's dataset and task, settable from
the command line even where the config file leaves it out.

A dataset's options are its loader's keyword arguments, a task's those of
its class (docs/microscopy.md, docs/instances.md list them); a config file
sets only the ones it changes, so `--config.data.max_images=20` on
configs/dsb2018.py found no key. `complete` adds an option to the config
only when an override names it, so the config a run saves (and compares on
resume) is unchanged for every command that does not use one.
"""
import inspect
import typing

import ml_collections

# The keyword arguments the trainer passes itself, not options.
_FROM_TRAINER = {"self", "info"}


def options(section: str, name: str) -> dict[str, inspect.Parameter]:
  """{option: parameter} of the dataset or task `name`; {} if unknown."""
  from unetjax import data, tasks  # pylint: disable=g-import-not-at-top
  from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
  registry = {"data": data.DATASETS, "task": tasks.TASKS}[section]
  try:
    found = registry.get(name)
  except ConfigError:
    return {}  # an unknown name is reported by the build, naming the key
  target = found.__init__ if inspect.isclass(found) else found
  return {key: parameter for key, parameter in
          inspect.signature(target, eval_str=True).parameters.items()
          if key not in _FROM_TRAINER and parameter.kind in (
              parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
          and parameter.default is not parameter.empty}


def complete(config: ml_collections.ConfigDict,
             overrides: dict[str, str]) -> None:
  """Adds to `config` (unlocked) the dataset and task options named by
  `overrides` ({'data.max_images': '20'}) that it lacks, at their
  defaults; a `data.name`/`task.name` override picks whose options."""
  for path in overrides:
    section, _, key = path.partition(".")
    if section not in ("data", "task") or not key or "." in key:
      continue
    part = config.get(section)
    if not isinstance(part, ml_collections.ConfigDict) or key in part:
      continue
    name = overrides.get(f"{section}.name", part.get("name", ""))
    parameter = options(section, name.strip("'\"")).get(key)
    field = None if parameter is None else _field(parameter)
    if field is not None:
      part[key] = field


def _field(parameter: inspect.Parameter):
  """The default, typed: None becomes a placeholder of the annotated type
  so that an override can set it (`data.mask_threshold=0.5`)."""
  if parameter.default is not None:
    return parameter.default
  hints = [t for t in typing.get_args(parameter.annotation)
           if t is not type(None)] or [parameter.annotation]
  if hints[0] not in (int, float, str, bool):
    return None  # not settable as a flag value: left to the config file
  return ml_collections.config_dict.placeholder(hints[0])
