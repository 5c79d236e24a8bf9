"""The rooms of the package import one way (docs/architecture.md).

The contracts live in pyproject.toml ([tool.importlinter]); these tests run
them on the package as it is, and on a copy given one upward import, which
must be refused with the importing line named.
"""
import os
import shutil
import subprocess
import sys

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


def _append(path: str, line: str) -> None:
  with open(path, "a") as f:
    f.write("\n" + line + "\n")


def test_an_upward_import_breaks_the_layers_and_is_named(tmp_path):
  root = _copy(tmp_path)
  _append(os.path.join(root, "unetjax", "runtime", "errors.py"),
          "from unetjax.training import train  # upward on purpose")
  done = _lint(root)
  assert done.returncode != 0
  assert "unetjax.runtime.errors -> unetjax.training.train" in done.stdout


def test_data_and_models_may_not_know_each_other(tmp_path):
  root = _copy(tmp_path)
  _append(os.path.join(root, "unetjax", "models", "unet.py"),
          "from unetjax.data import image_io")
  done = _lint(root)
  assert done.returncode != 0
  assert "unetjax.models.unet -> unetjax.data.image_io" in done.stdout


def test_only_the_benchmarks_may_import_torch(tmp_path):
  root = _copy(tmp_path)
  _append(os.path.join(root, "unetjax", "inference", "tiling.py"),
          "import torch")
  done = _lint(root)
  assert done.returncode != 0
  assert "unetjax.inference.tiling -> torch" in done.stdout
