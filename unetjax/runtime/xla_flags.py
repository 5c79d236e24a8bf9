"""XLA flags the package sets for speed, each only where jaxlib knows it.

XLA aborts the whole process on a flag it does not know, so a flag is added
to `XLA_FLAGS` only after its name is found in the installed jaxlib's own
library, only when the user's `XLA_FLAGS` do not mention it already, and
never when `UNETJAX_XLA_FLAGS=0`. XLA reads `XLA_FLAGS` when the first
computation starts its backend: call `configure()` before that.
"""
import functools
import mmap
import os

import jaxlib

# On CPU, XLA hands convolutions to YNNPACK by default; on the 2-core x86
# machine measured (docs/performance.md) that is several times slower than
# XLA's own Eigen convolutions for a U-Net, worst at full resolution with few
# channels. This keeps YNNPACK for everything but single convolutions. It is
# read by the CPU backend only.
DEFAULT_FLAGS = {"xla_cpu_experimental_ynn_fusion_type":
                 "-individual_convolution"}
OPT_OUT_VARIABLE = "UNETJAX_XLA_FLAGS"


def configure() -> list[str]:
  """Adds the known, unset DEFAULT_FLAGS to XLA_FLAGS; returns those added."""
  if os.environ.get(OPT_OUT_VARIABLE, "1") == "0":
    return []
  current = os.environ.get("XLA_FLAGS", "")
  added = [f"--{name}={value}" for name, value in DEFAULT_FLAGS.items()
           if name not in current and jaxlib_knows(name)]
  if added:
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
  return added


@functools.cache
def jaxlib_knows(flag: str) -> bool:
  """Whether the installed jaxlib's XLA defines a flag of this name."""
  library = os.path.join(os.path.dirname(jaxlib.__file__),
                         "libjax_common.so")
  if not os.path.exists(library):
    return False
  with open(library, "rb") as f, mmap.mmap(
      f.fileno(), 0, access=mmap.ACCESS_READ) as contents:
    return contents.find(flag.encode()) >= 0
