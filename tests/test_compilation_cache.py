"""The persistent compilation cache: on for the package's runs, opt-out."""
import os
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize("opt_out", [False, True])
def test_compilation_cache_stores_programs_unless_opted_out(tmp_path,
                                                             opt_out):
  env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if opt_out:
    env["UNETJAX_COMPILATION_CACHE"] = "0"
  code = ("from unetjax.training import parallel; parallel.initialize_distributed();"
          "import jax, jax.numpy as jnp;"
          "print(jax.jit(lambda x: x * 3 + 1)(jnp.arange(4.0)).sum())")
  done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                        capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert float(done.stdout) == 22.0
  cache = tmp_path / "unetjax" / "jax"
  entries = list(cache.iterdir()) if cache.exists() else []
  assert bool(entries) == (not opt_out)
