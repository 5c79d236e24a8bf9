"""Architecture handed over as a JSON file: `--config.model.spec=u_net.json`.

The file is one JSON object whose keys are options of the model named by
`config.model.name` (for the U-Net: `features` per level from the top to
the bottleneck, `convs_per_level`, `kernel_size`, `padding`, `batchnorm`,
`dropout`, `upsampling`, `skip`, `dilate`, ...). `depth` may be left out
when `features` is a list: it is then one less than the list's length.
See configs/u_net.json. Unknown keys, and keys also set to a different
value in `config.model`, are errors naming the file: an architecture is
given in one place.
"""
import inspect
import json
import os
from typing import Any

from unetjax.runtime.errors import ConfigError

NOT_IN_SPEC = ("self", "in_channels", "num_outputs", "dtype", "param_dtype",
               "rngs")


def resolve(kwargs: dict[str, Any], model_cls) -> dict[str, Any]:
  """config.model's keyword arguments with `spec` replaced by its content."""
  kwargs = dict(kwargs)
  path = kwargs.pop("spec", "")
  if not path:
    return kwargs
  spec = load(path, model_cls)
  clashes = {k: (kwargs[k], v) for k, v in spec.items()
             if k in kwargs and kwargs[k] != v}
  if clashes:
    key, (ours, theirs) = next(iter(clashes.items()))
    raise ConfigError(f"model.{key}={ours!r} conflicts with {key}={theirs!r} "
                      f"in {path}; set the architecture in one place")
  return {**kwargs, **spec}


def load(path: str, model_cls) -> dict[str, Any]:
  """The validated options in a spec file."""
  if not os.path.isfile(path):
    raise ConfigError(f"model.spec={path!r}: no such file (paths are "
                      "relative to the working directory)")
  try:
    with open(path) as f:
      spec = json.load(f)
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(spec, dict):
    raise ConfigError(f"{path}: expected a JSON object of model options, got "
                      f"{type(spec).__name__}")
  options = inspect.signature(model_cls.__init__).parameters
  allowed = sorted(set(options) - set(NOT_IN_SPEC))
  for key, value in spec.items():
    if key not in allowed:
      raise ConfigError(f"{path}: {key!r} is not an option of "
                        f"{model_cls.__name__}; expected one of {allowed}")
    _check_type(path, key, value, options[key].default)
  if isinstance(spec.get("features"), list):
    spec["features"] = tuple(spec["features"])
    spec.setdefault("depth", len(spec["features"]) - 1)
  return spec


def _check_type(path: str, key: str, value: Any, default: Any) -> None:
  """The JSON value has the kind of the option's default."""
  if isinstance(default, bool):
    ok = isinstance(value, bool)
  elif isinstance(default, int):  # features: one int or a list of them
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (
        key == "features" and isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool)
                for v in value))
  elif isinstance(default, float):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif isinstance(default, str):
    ok = isinstance(value, str)
  else:
    ok = True
  if not ok:
    raise ConfigError(f"{path}: {key}={json.dumps(value)} has the wrong type; "
                      f"expected a value like {default!r}")
