"""JAX's persistent compilation cache, on for the package's runs.

Compiling the reference U-Net's train step takes about 5 s on 2 CPU cores,
and building a model compiles dozens of small initializer programs. With
the cache, a re-run, a resume or the next sweep trial loads them from disk
instead. Entries are keyed by the program, the jaxlib version and the XLA
flags, so an entry from another setting is never used.
"""
import os

import jax

OPT_OUT_VARIABLE = "UNETJAX_COMPILATION_CACHE"


def default_dir() -> str:
  base = (os.environ.get("XDG_CACHE_HOME")
          or os.path.join(os.path.expanduser("~"), ".cache"))
  return os.path.join(base, "unetjax", "jax")


def configure() -> str | None:
  """Turns the cache on; returns its folder, or None when opted out.

  A folder the user gave JAX (`JAX_COMPILATION_CACHE_DIR`) is kept, with
  the user's other cache settings; otherwise every program is cached, the
  small ones too, under `default_dir()`. `UNETJAX_COMPILATION_CACHE=0`
  leaves JAX's settings alone.
  """
  if os.environ.get(OPT_OUT_VARIABLE, "1") == "0":
    return None
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  path = default_dir()
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path
