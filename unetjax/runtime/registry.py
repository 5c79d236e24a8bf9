"""Name -> implementation lookup for models, datasets, tasks, schedules.

Entries are "module:attribute" strings imported on first use, so naming a
dataset in a config does not import TensorFlow for a model test, and adding
an implementation means one new module plus one line here or in the
registry's owner.
"""
import importlib
from typing import Any

from unetjax.runtime.errors import ConfigError


class Registry:
  """A lazily importing mapping from config names to callables."""

  def __init__(self, kind: str, key: str, entries: dict[str, str]):
    self.kind = kind
    self.key = key
    self._entries = dict(entries)

  def names(self) -> list[str]:
    return sorted(self._entries)

  def get(self, name: str) -> Any:
    if name not in self._entries:
      raise ConfigError(
          f"{self.key}={name!r} is not a known {self.kind}; "
          f"expected one of {self.names()}")
    module_name, attribute = self._entries[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)
