"""Model registry: `config.model.name` -> an NNX module class.

Each model takes keyword arguments `in_channels`, `num_outputs`, `dtype`,
`param_dtype` and `rngs` from the trainer, and the rest from
`config.model`; `config.model.spec` may name a JSON file holding them
(unetjax/models/spec.py). Add a model: one module here and one line below.
"""
import inspect

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from unetjax.models import spec
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError
from unetjax.runtime.registry import Registry

MODELS = Registry("model", "model.name", {
    "unet": "unetjax.models.unet:UNet",
    "resnet": "unetjax.models.resnet:ResNet",
    "fcn32": "unetjax.models.fcn:FCN32",
    "mlp": "unetjax.models.mlp:MLP",
    "cnn": "unetjax.models.cnn:CNN",
})

_FROM_TRAINER = ("in_channels", "num_outputs", "dtype", "param_dtype", "rngs")


def build(config: ml_collections.ConfigDict, *, in_channels: int,
          num_outputs: int, rngs: nnx.Rngs) -> nnx.Module:
  """The model named by config.model, its unknown keys rejected by name."""
  model_cls = MODELS.get(config.model.name)
  kwargs = spec.resolve(config_lib.section_kwargs(config.model), model_cls)
  accepted = set(inspect.signature(model_cls.__init__).parameters)
  for key in kwargs:
    if key not in accepted or key in _FROM_TRAINER:
      options = sorted(accepted - set(_FROM_TRAINER) - {"self"})
      raise ConfigError(f"model.{key} is not an option of model "
                        f"{config.model.name!r}; expected one of {options}")
  return model_cls(in_channels=in_channels, num_outputs=num_outputs,
                   dtype=jnp.dtype(config.dtype),
                   param_dtype=jnp.dtype(config.param_dtype), rngs=rngs,
                   **kwargs)


def count_params(model: nnx.Module) -> int:
  return sum(int(np.prod(p.shape)) for p in
             _flat_params(model).values())


def summary(model: nnx.Module) -> str:
  """A table of parameter counts per layer and in total."""
  rows = {}
  for path, value in _flat_params(model).items():
    layer = ".".join(str(k) for k in path[:-1])
    shapes, count = rows.get(layer, ([], 0))
    rows[layer] = (shapes + [f"{path[-1]}{tuple(value.shape)}"],
                   count + int(np.prod(value.shape)))
  width = max([len(name) for name in rows] + [5])
  lines = [f"{'layer':<{width}}  {'params':>10}  shapes"]
  for layer, (shapes, count) in rows.items():
    lines.append(f"{layer:<{width}}  {count:>10,}  {' '.join(shapes)}")
  lines.append(f"{'total':<{width}}  {count_params(model):>10,}")
  return "\n".join(lines)


def _flat_params(model: nnx.Module) -> dict:
  return dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
