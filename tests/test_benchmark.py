"""The benchmark's counts and bookkeeping, and the guarded XLA flags."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from unetjax.benchmarks import common, torch_unet, training
from unetjax.runtime import xla_flags
from unetjax.runtime.errors import ConfigError

YNN = "xla_cpu_experimental_ynn_fusion_type"


def test_jaxpr_flops_counts_two_per_multiply_add():
  def convs_and_matmul(x, kernel, a, b):
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO",
                                                        "NHWC"))
    return y, jax.jit(jnp.matmul)(a, b)  # nested: counted inside the jit

  jaxpr = jax.make_jaxpr(convs_and_matmul)(
      jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), jnp.ones((2, 3)),
      jnp.ones((3, 5)))
  conv = 2 * (8 * 8 * 4) * (3 * 3 * 3)  # per output: 27 multiply-adds
  matmul = 2 * (2 * 5) * 3
  assert training.jaxpr_flops(jaxpr.jaxpr) == conv + matmul


def test_torch_twin_has_the_reference_parameter_count():
  torch = pytest.importorskip("torch")
  spec = dict(depth=4, features=32, batchnorm=True, bn_momentum=0.9,
              in_channels=1, num_outputs=1)
  model = torch_unet.torch_unet(torch, spec)  # pylint: disable=protected-access
  assert sum(p.numel() for p in model.parameters()) == 7_762_465
  assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_summary_takes_medians_and_ratios():
  runs = {"jax": [dict(images_per_s=x, gflops_per_s=10 * x,
                       train_peak_rss_bytes=300, matmul_peak_gflops=100.0,
                       analytic_flops_per_step=80e9, load_1min=[1.0, 1.0])
                  for x in (1.0, 4.0, 2.0)],
          "torch": [dict(images_per_s=1.0, step_s=8.0,
                         train_peak_rss_bytes=200,
                         matmul_peak_gflops=50.0), dict(error="boom")]}
  summary = training.summarize(runs)
  assert summary["jax"]["images_per_s"] == 2.0
  assert summary["speed_ratio_jax_over_torch"] == 2.0
  assert summary["memory_ratio_jax_over_torch"] == 1.5
  assert summary["jax_fraction_of_peak"] == 0.2  # 20 of the best peak, 100
  assert summary["torch_fraction_of_peak"] == 0.1  # 80 GFLOP in 8 s of 100
  assert "boom" in training.table(dict(config="c", runs=runs,
                                        summary=summary,
                                        machine=common.machine()))


def test_unknown_config_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="nothere.py does not exist"):
    common.load_config(str(tmp_path / "nothere.py"))


def test_xla_flags_known_to_jaxlib_are_found():
  assert xla_flags.jaxlib_knows(YNN)
  assert not xla_flags.jaxlib_knows("xla_cpu_no_such_flag_at_all")


@pytest.mark.parametrize("env, want", [
    ({}, f"--{YNN}=-individual_convolution"),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
     f"--xla_force_host_platform_device_count=2 --{YNN}=-individual_convolution"),
    ({"XLA_FLAGS": f"--{YNN}=default"}, f"--{YNN}=default"),  # the user's
    ({"UNETJAX_XLA_FLAGS": "0"}, None),
])
def test_configure_adds_only_unset_flags_unless_opted_out(monkeypatch, env,
                                                          want):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv("UNETJAX_XLA_FLAGS", raising=False)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  xla_flags.configure()
  assert os.environ.get("XLA_FLAGS") == want


def test_the_flags_set_are_accepted_by_xla():
  """An unknown flag would abort this process; a known one computes."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  code = ("from unetjax.runtime import xla_flags; assert xla_flags.configure();"
          "import jax, jax.numpy as jnp;"
          "x = jnp.ones((1, 8, 8, 2)); k = jnp.ones((3, 3, 2, 2));"
          "y = jax.lax.conv(x.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1),"
          " (1, 1), 'SAME'); print(float(y.sum()))")
  done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                        capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  # Interior pixels see 3x3x2 ones; edges fewer: the sum over all outputs.
  per_axis = np.convolve(np.ones(8), np.ones(3), "same").sum()
  assert float(done.stdout) == per_axis ** 2 * 2 * 2


def test_jax_worker_measures_the_packages_train_step(tmp_path):
  config_file = tmp_path / "tiny.py"
  config_file.write_text("from conftest import tiny_cells_config\n"
                         "get_config = tiny_cells_config\n")
  result = training.run_jax(str(config_file), steps=2, batch_size=4)
  assert result["num_params"] == result["torch_spec"]["num_params"] > 0
  assert result["images_per_s"] == pytest.approx(4 / result["step_s"])
  assert 0 <= result["input_wait_fraction"] <= 1
  # XLA's count adds elementwise work and skips the first layer's input
  # gradient; the convolutions dominate either way.
  assert 0.5 < result["flops_per_step"] / result[
      "analytic_flops_per_step"] < 2
  for key in ("compile_s", "matmul_peak_gflops", "input_images_per_s",
              "eval_images_per_s", "predict_images_per_s", "peak_rss_bytes",
              "step_buffers_bytes"):
    assert result[key] > 0, key
  assert result["gflops_per_s"] == pytest.approx(
      result["analytic_flops_per_step"] / result["step_s"] / 1e9)
  assert "device_peak_bytes" not in result  # the CPU does not report one


def test_set_overrides_config_values_and_rejects_unknown_keys():
  config = common.load_config(common.REFERENCE)
  common.override(config, ["data.image_size=64", "augment.flip=False",
                              "model.name=unet"])
  assert (config.data.image_size, config.augment.flip) == (64, False)
  with pytest.raises(ConfigError, match="--set data.nokey=1"):
    common.override(config, ["data.nokey=1"])


def test_fixed_batch_has_the_pipelines_shapes_dtypes_and_range():
  from conftest import tiny_cells_config  # pylint: disable=g-import-not-at-top

  from unetjax import data as datasets  # pylint: disable=g-import-not-at-top
  from unetjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  config = tiny_cells_config()
  config.augment.crop_size = 8
  split = datasets.build(config).split("train")
  piped = next(input_pipeline.train_batches(
      split, batch_size=4, seed=0, start_step=0,
      augment_config=config.augment))
  fixed = training.fixed_batch(split, 4, crop_size=8)
  assert fixed.keys() == piped.keys()
  for key in fixed:
    assert fixed[key].shape == piped[key].shape, key
    assert fixed[key].dtype == piped[key].dtype, key
  assert 0 <= fixed["image"].min() and fixed["image"].max() <= 1
  np.testing.assert_array_equal(fixed["label"], split.labels[:4, :8, :8])
  with pytest.raises(ConfigError, match="needs 9 training examples"):
    training.fixed_batch(split, 9, crop_size=0)


def test_model_building_and_stepping_need_no_tensorflow():
  """A GPU machine without TensorFlow can still run `--input fixed`."""
  code = ("import sys; sys.modules['tensorflow'] = None\n"
          "from unetjax import benchmark, evaluate\nfrom unetjax.training import train\n"
          "print('imported')")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, check=False)
  assert done.stdout.strip() == "imported", done.stderr[-2000:]
