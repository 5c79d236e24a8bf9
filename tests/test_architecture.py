"""The rooms of the package import one way (docs/architecture.md).

The contracts live in pyproject.toml ([tool.importlinter]); these tests run
them on the package as it is, and on a copy given one upward import, which
must be refused with the importing line named.
"""
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(root: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=root)  # the copy's package, not ours
  return subprocess.run([LINT, "--config", os.path.join(root, "pyproject.toml"),
                         "--no-cache"], cwd=root, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def test_the_package_keeps_every_import_contract():
  done = _lint(REPO)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
  assert "3 kept, 0 broken" in done.stdout


def _copy(tmp_path) -> str:
  root = str(tmp_path / "repo")
  shutil.copytree(os.path.join(REPO, "unetjax"), os.path.join(root, "unetjax"),
                  ignore=shutil.ignore_patterns("__pycache__", "*.png"))
  shutil.copy(os.path.join(REPO, "pyproject.toml"), root)
  return root


@pytest.mark.parametrize("module, line, named", [
    # a lower room importing a higher one: the layers contract
    ("runtime/errors.py", "from unetjax.training import train",
     "unetjax.runtime.errors -> unetjax.training.train"),
    # data and models may not know each other: independent layers
    ("models/unet.py", "from unetjax.data import image_io",
     "unetjax.models.unet -> unetjax.data.image_io"),
    # the peers stay in the benchmarks: the forbidden contract
    ("inference/tiling.py", "import torch", "unetjax.inference.tiling -> torch"),
])
def test_a_broken_contract_fails_and_names_the_import(tmp_path, module, line,
                                                      named):
  root = _copy(tmp_path)
  with open(os.path.join(root, "unetjax", module), "a") as f:
    f.write("\n" + line + "  # on purpose\n")
  done = _lint(root)
  assert done.returncode != 0
  assert named in done.stdout
