"""The per-level convolution benchmark: its levels, counts and arithmetic."""
import pytest
from conftest import tiny_cells_config

from unetjax import benchmark
from unetjax.benchmarks import common
from unetjax.benchmarks import layers as layer_benchmark
from unetjax.runtime.errors import ConfigError


def test_levels_halve_the_size_and_double_the_width():
  config = common.load_config(common.REFERENCE)
  assert layer_benchmark.levels(config) == [
      dict(batch=8, size=256, features=32), dict(batch=8, size=128, features=64),
      dict(batch=8, size=64, features=128), dict(batch=8, size=32, features=256),
      dict(batch=8, size=16, features=512)]


def test_levels_start_from_the_crop_when_there_is_one():
  config = tiny_cells_config()
  config.augment.crop_size = 8
  assert [level["size"] for level in layer_benchmark.levels(config)] == [
      8, 4, 2]


def test_levels_need_a_unet():
  config = tiny_cells_config()
  config.model.name = "fcn32"
  with pytest.raises(ConfigError, match="model.name='fcn32'"):
    layer_benchmark.levels(config)


def test_conv_flops_count_two_per_multiply_add():
  # 2 images of 4x4 pixels, 3 -> 3 channels: each output sums 3x3x3 taps.
  outputs = 2 * 4 * 4 * 3
  assert layer_benchmark.conv_flops(dict(batch=2, size=4, features=3)) == (
      2 * outputs * 27)


def _run(seconds: list[float], peak: float):
  return dict(seconds=[dict(zip(layer_benchmark.PASSES, level_seconds))
                       for level_seconds in seconds],
              matmul_peak_gflops=peak)


def test_summary_is_flops_over_median_seconds_against_the_best_peak():
  level = dict(batch=1, size=10, features=10)  # 180,000 FLOPs a pass
  passes = [[1e-6, 2e-6, 3e-6]]
  runs = {"jax": [_run(passes, 100.0), _run([[2e-6] * 3], 150.0),
                  _run([[9e-6] * 3], 120.0)],
          "torch": [_run([[3e-6] * 3], 200.0), dict(error="boom")]}
  summary = layer_benchmark.summarize([level], runs)
  assert summary["matmul_peak_gflops"] == 200.0
  row = summary["levels"][0]
  assert row["jax forward"] == pytest.approx(90.0)  # 180,000 / 2e-6 s
  assert row["jax weight_gradient"] == pytest.approx(60.0)  # median 3e-6
  assert row["torch weight_gradient"] == pytest.approx(60.0)
  text = layer_benchmark.table(summary)
  assert "1x10x10x10" in text and "90 ( 45%)" in text and "60 ( 30%)" in text
  assert "error: boom" in text


def test_overall_is_all_flops_over_all_seconds():
  """Not the mean of the rates: a slow pass weighs by the time it takes."""
  levels = [dict(batch=1, size=10, features=10),  # 180,000 FLOPs a pass
            dict(batch=1, size=5, features=20)]  # 180,000 too
  runs = {"jax": [_run([[1e-6, 1e-6, 1e-6], [1e-6, 1e-6, 7e-6]], 100.0)]}
  summary = layer_benchmark.summarize(levels, runs)
  assert summary["overall"] == {"jax": pytest.approx(6 * 180e3 / 12e-6
                                                     / 1e9)}
  assert "all levels, passes  jax" in layer_benchmark.table(summary)


def test_no_successful_run_is_reported_not_divided_by():
  summary = layer_benchmark.summarize([dict(batch=1, size=2, features=1)],
                                      {"jax": [dict(error="no memory")]})
  assert layer_benchmark.table(summary) == "no run succeeded\nno memory"


def test_options_that_do_not_apply_are_refused():
  with pytest.raises(SystemExit, match="--dtype and --input do not apply"):
    benchmark.main(["--layers", "--dtype", "bfloat16"])


def test_jax_worker_times_every_pass_of_every_level():
  levels = [dict(batch=2, size=8, features=4),
            dict(batch=2, size=4, features=8)]
  result = layer_benchmark.run_jax(levels, repeats=2)
  assert len(result["seconds"]) == 2
  for seconds in result["seconds"]:
    assert set(seconds) == set(layer_benchmark.PASSES)
    assert all(s > 0 for s in seconds.values())
  assert result["matmul_peak_gflops"] > 0


def test_torch_worker_times_the_same_passes():
  pytest.importorskip("torch")
  result = layer_benchmark.run_torch([dict(batch=2, size=8, features=4)],
                                     repeats=2)
  assert set(result["seconds"][0]) == set(layer_benchmark.PASSES)
