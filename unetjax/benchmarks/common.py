"""What every benchmark shares: the configs it measures, fresh worker
processes, the machine's description, peak memory, medians and the matmul
peak that FLOP rates are compared with."""
import ast
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from unetjax.runtime import compilation_cache

REFERENCE = "reference"


ORIGINAL = "original"


# The n of the n x n x n matmul whose speed is taken as the peak: a size at
# which the backend's GEMM runs at full speed (a GPU needs a larger one).
_MATMUL_SIZE = {"cpu": 2048}


_MATMUL_SIZE_ACCELERATOR = 8192


def reference_config():
  """The U-Net of the PyTorch comparison: 7,762,465 parameters.

  Depth 4, 32 base features doubling to 512, BatchNorm, ReLU, 2x2
  transposed-conv up-sampling, 256x256x1 input, batch 8, BCE, Adam; the
  images are the synthetic cells at 256x256 with flips and rotations.
  """
  from unetjax.runtime.config import base_config  # pylint: disable=g-import-not-at-top
  config = base_config()
  config.model = dict(name="unet", depth=4, features=32, batchnorm=True)
  config.data = dict(name="cells", train_examples=0, image_size=256,
                     num_train=16, num_val=8, num_test=8, seed=0)
  config.task = dict(name="binary_segmentation", dice_weight=0.0)
  config.augment.flip = True
  config.augment.rot90 = True
  config.batch_size = 8
  config.eval_batch_size = 8
  return config


def original_config():
  """The paper-sized U-Net (64 base features, 31,036,481 parameters) on
  512x512 inputs, batch 4: a GPU-sized job."""
  config = reference_config()
  config.model.features = 64
  config.data.image_size = 512
  config.batch_size = config.eval_batch_size = 4
  return config


def load_config(name: str):
  """A named config, a config name under configs/, or a config file path."""
  named = {REFERENCE: reference_config, ORIGINAL: original_config}
  if name in named:
    return named[name]()
  path = name if name.endswith(".py") else os.path.join("configs",
                                                        f"{name}.py")
  if not os.path.exists(path):
    from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f"--config {name}: {path} does not exist; expected "
                      f"'{REFERENCE}', a name under configs/ or a .py path")
  spec = importlib.util.spec_from_file_location("benchmark_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()`, which must block until its work is done."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_size(platform_name: str) -> int:
  return _MATMUL_SIZE.get(platform_name, _MATMUL_SIZE_ACCELERATOR)


def warm_median_seconds(fn, repeats: int) -> float:
  """`median_seconds` after one untimed call (compilation, warm caches)."""
  fn()
  return median_seconds(fn, repeats)


def matmul_gflops(matmul, n: int, repeats: int = 5) -> float:
  """GFLOP/s of `matmul()`, a blocking n x n x n product."""
  return 2 * n ** 3 / warm_median_seconds(matmul, repeats) / 1e9


def jax_matmul_peak(dtype: str = "float32") -> float:
  """GFLOP/s of JAX's n x n x n matmul on the first device."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  size = matmul_size(jax.devices()[0].platform)
  a = jnp.ones((size, size), jnp.dtype(dtype))
  product = jax.jit(jnp.matmul)
  return matmul_gflops(lambda: product(a, a).block_until_ready(), size)


def torch_matmul_peak(device: str, dtype: str = "float32") -> float:
  """GFLOP/s of torch's n x n x n matmul on `device`."""
  import torch  # pylint: disable=g-import-not-at-top
  size = matmul_size(device)
  a = torch.ones(size, size, device=device, dtype=getattr(torch, dtype))
  return matmul_gflops(lambda: torch.mm(a, a).sum().item(), size)


def override(config, assignments: list[str]) -> None:
  """Applies `key=value` settings (Python literals) to existing keys only."""
  from unetjax.runtime import config as config_lib  # pylint: disable=g-import-not-at-top
  from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
  config.lock()  # a misspelt key fails instead of adding a new one
  for assignment in assignments:
    key, _, text = assignment.partition("=")
    *parents, leaf = key.split(".")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      section = config_lib.lookup(config, ".".join(parents)) if parents \
          else config
      section[leaf] = value
    except (KeyError, AttributeError, TypeError) as e:
      raise ConfigError(f"--set {assignment}: {e}") from None
  config.unlock()


def machine() -> dict[str, Any]:
  """Where the figures were taken: CPU, cores, load and library versions."""
  versions = {}
  for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
    try:
      from importlib import metadata  # pylint: disable=g-import-not-at-top
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return dict(cpu=_cpu_name(), cores=os.cpu_count(),
              platform=platform.platform(), python=platform.python_version(),
              versions=versions)


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def run_worker(args: list[str]) -> dict[str, Any]:
  """Runs one measurement in a fresh interpreter; its last line is JSON.

  The persistent compilation cache is off there, so every run compiles
  from scratch and the compile times are comparable.
  """
  load_before = os.getloadavg()[0]
  env = dict(os.environ, **{compilation_cache.OPT_OUT_VARIABLE: "0"})
  done = subprocess.run([sys.executable, "-m", "unetjax.benchmark",
                         "--worker", *args], capture_output=True, text=True,
                        check=False, env=env)
  if done.returncode:
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return dict(error=tail)
  result = json.loads(done.stdout.strip().splitlines()[-1])
  result["load_1min"] = [load_before, os.getloadavg()[0]]
  return result


def failures(runs, where: tuple[str, ...] = ()) -> list[str]:
  """'case side: error' of every failed run in a result's `runs` (dicts
  of lists of run dicts, nested as each mode builds them)."""
  if isinstance(runs, dict):
    return [line for name, value in runs.items()
            for line in failures(value, (*where, str(name)))]
  return [f"{' '.join(where)}: {run['error']}" for run in runs
          if isinstance(run, dict) and "error" in run]


def torch_available() -> bool:
  return importlib.util.find_spec("torch") is not None
