"""Redraw learning curves from a run's logs: `python -m unetjax.plot`.

  python -m unetjax.plot --workdir workdirs/cells --steps 0:200
  python -m unetjax.plot --workdir runs/bn_on --workdir runs/bn_off \
      --metrics loss,dice --out bn.png

Reads `workdir/history.jsonl` (every scalar training logged, the same
values as the TensorBoard events, without TensorFlow) and draws one panel
per metric, train and val, for any step range: the close-up of the first
steps is a common request. Several workdirs are overlaid, one colour each.
"""
import os
import sys

from absl import flags

from unetjax.runtime import cli, history
from unetjax.runtime.errors import ConfigError, WorkdirError
from unetjax.viz import plots

FLAGS = flags.FLAGS


def parse_steps(text: str) -> tuple[float, float] | None:
  """'100:500', ':500', '100:' or '' -> an inclusive step range."""
  if not text:
    return None
  start, sep, end = text.partition(":")
  try:
    if not sep:
      raise ValueError
    low = float(start) if start else 0.0
    high = float(end) if end else float("inf")
  except ValueError:
    raise ConfigError(f"--steps={text!r}: expected START:END, e.g. 0:500"
                      ) from None
  if not low == low or not high == high or low < 0 or low > high:  # nan
    raise ConfigError(f"--steps={text!r}: expected 0 <= START <= END, e.g. "
                      "0:500")
  return low, high


def check_out(out: str) -> None:
  """--out must be a picture file matplotlib can write, in a folder."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  from matplotlib.backend_bases import FigureCanvasBase  # pylint: disable=g-import-not-at-top
  del matplotlib
  if os.path.isdir(out):
    raise ConfigError(f"--out={out}: is a directory; expected a picture file "
                      "such as curves.png")
  suffix = os.path.splitext(out)[1].lower().lstrip(".")
  formats = FigureCanvasBase.get_supported_filetypes()
  if suffix not in formats:
    raise ConfigError(f"--out={out}: {suffix or 'no extension'} is not a "
                      f"picture format; expected one of "
                      f"{', '.join(sorted(formats))}")
  parent = os.path.dirname(os.path.abspath(out))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ConfigError(f"--out={out}: {parent} is a file, not a directory")


def plot_workdirs(workdirs: list[str], out: str, *, steps: str = "",
                  metrics: list[str] | None = None) -> str:
  """Draws the curves of `workdirs` into `out`; returns the metrics drawn."""
  check_out(out)
  window = parse_steps(steps)
  runs = {}
  for workdir in workdirs:
    records = history.read(workdir)
    if not records:
      raise WorkdirError(f"{os.path.join(workdir, history.FILENAME)} is "
                         "missing or empty: is this a training workdir?")
    runs[os.path.basename(os.path.normpath(workdir))] = records
  logged = sorted({key.split("/", 1)[1] for records in runs.values()
                   for record in records for key in record if "/" in key})
  metrics = metrics or [m for m in logged if m != "learning_rate"]
  unknown = [m for m in metrics if m not in logged]
  if unknown:
    raise ConfigError(f"--metrics: {unknown} not logged; the runs have "
                      f"{logged}")
  plots.compare_curves(runs if len(runs) > 1 else {"": runs.popitem()[1]},
                       metrics, out, window,
                       title=f"steps {steps}" if steps else "")
  return metrics


def main(argv):
  cli.no_arguments(argv)
  steps = FLAGS.steps.replace(":", "-") if FLAGS.steps else "all"
  out = FLAGS.out or os.path.join(FLAGS.workdir[0], "plots",
                                  f"curves_{steps}.png")
  with cli.user_errors():
    metrics = plot_workdirs(FLAGS.workdir, out, steps=FLAGS.steps,
                            metrics=FLAGS.metrics)
  print(f"Drew {', '.join(metrics)} to {out}")


def run(argv: list[str] | None = None):
  """Console-script entry point (`unetjax-plot`); flags defined here so
  the tools, which share flag names, can be imported together."""
  flags.DEFINE_multi_string("workdir", None, "Workdir(s); repeat to overlay.",
                            required=True)
  flags.DEFINE_string("steps", "", "Step range START:END, e.g. 0:500.")
  flags.DEFINE_list("metrics", None, "Metrics to draw; default all logged.")
  flags.DEFINE_string("out", None, "PNG path; default "
                      "<first workdir>/plots/curves_<steps>.png.")
  cli.run(main, sys.modules[__name__], argv)


if __name__ == "__main__":
  run()
