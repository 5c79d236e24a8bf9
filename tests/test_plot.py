"""Learning curves redrawn from history.jsonl, for a step range or overlaid."""
import pytest
from PIL import Image

from unetjax import plot
from unetjax.runtime.errors import ConfigError, WorkdirError


def test_parse_steps():
  assert plot.parse_steps("0:500") == (0, 500)
  assert plot.parse_steps(":20") == (0, 20)
  assert plot.parse_steps("5:") == (5, float("inf"))
  with pytest.raises(ConfigError, match="START:END"):
    plot.parse_steps("500")


def test_plots_a_range_and_overlays_workdirs(trained_workdir, tmp_path):
  out = str(tmp_path / "one.png")
  metrics = plot.plot_workdirs([trained_workdir], out, steps="0:3")
  assert metrics == ["accuracy", "dice", "dice_per_image", "iou", "loss"]
  width, _ = Image.open(out).size
  assert width == 5 * 5 * 100  # one 5-inch panel per metric at 100 dpi
  both = str(tmp_path / "both.png")
  assert plot.plot_workdirs([trained_workdir, trained_workdir], both,
                            metrics=["loss"]) == ["loss"]
  with pytest.raises(ConfigError, match="not logged"):
    plot.plot_workdirs([trained_workdir], out, metrics=["psnr"])
  with pytest.raises(WorkdirError, match="history.jsonl"):
    plot.plot_workdirs([str(tmp_path)], out)
