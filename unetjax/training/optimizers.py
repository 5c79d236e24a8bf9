"""Optax optimizers by config name."""
import ml_collections
import optax

from unetjax.runtime.errors import ConfigError


def _sgd(cfg, lr):
  return optax.chain(
      optax.add_decayed_weights(cfg.weight_decay) if cfg.weight_decay
      else optax.identity(),
      optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))


def _adam(cfg, lr):
  if cfg.weight_decay:
    raise ConfigError("optimizer.weight_decay is set for adam: use "
                      "optimizer.name='adamw' for decoupled weight decay")
  return optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


def _adamw(cfg, lr):
  return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                     weight_decay=cfg.weight_decay)


def _rmsprop(cfg, lr):
  return optax.rmsprop(lr, momentum=cfg.momentum, eps=cfg.eps)


OPTIMIZERS = {"sgd": _sgd, "adam": _adam, "adamw": _adamw,
              "rmsprop": _rmsprop}


def build(config: ml_collections.ConfigDict,
          schedule: optax.Schedule) -> optax.GradientTransformation:
  cfg = config.optimizer
  if cfg.name not in OPTIMIZERS:
    raise ConfigError(f"optimizer.name={cfg.name!r} is not a known optimizer; "
                      f"expected one of {sorted(OPTIMIZERS)}")
  if cfg.weight_decay < 0 or cfg.momentum < 0 or cfg.grad_clip_norm < 0:
    raise ConfigError("optimizer.weight_decay, momentum and grad_clip_norm "
                      "must be >= 0")
  tx = OPTIMIZERS[cfg.name](cfg, schedule)
  if cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx
