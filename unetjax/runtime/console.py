"""What a person sees in the terminal: a few lines and a progress bar.

The full log (absl INFO lines: every metric, the model summary, library
messages) goes to the workdir's `train.log` and, with `--verbosity=0` (or
higher), to the terminal as before. Without it the terminal shows WARNING
and above from the libraries, one line when a run starts, a progress bar
with steps/s and time left on a TTY (tqdm), one line per evaluation with
the few numbers that matter for the task, and the final scores. When the
output is not a terminal (CI, a pipe, a file) there is no bar: a plain line
at each log point instead.
"""
import contextlib
import logging as std_logging
import os
import sys
import time

from absl import flags, logging

# The numbers an evaluation line shows, most telling first; the loss too.
HEADLINE = ("challenge_score", "ap50", "dice", "mean_iou", "accuracy",
            "psnr")
LOG_FILE = "train.log"


def verbose() -> bool:
  """Whether the user asked for the full log (`--verbosity`/`-v`)."""
  return bool(flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present)


def quiet_terminal() -> None:
  """Unless --verbosity was given: library INFO lines (TPU backend not
  found on a CPU machine, Orbax, CLU's writer) stay out of the terminal,
  and TensorFlow's C++ start-up notes (oneDNN) are not printed."""
  if verbose():
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  logging.get_absl_handler().setLevel(std_logging.WARNING)


@contextlib.contextmanager
def log_file(workdir: str):
  """Every absl log record of the block, INFO and up, appended to
  `workdir/train.log`, whatever the terminal shows."""
  if not hasattr(logging.get_absl_handler(), "setLevel"):
    yield
    return
  handler = std_logging.FileHandler(os.path.join(workdir, LOG_FILE))
  handler.setLevel(std_logging.INFO)
  handler.setFormatter(logging.PythonFormatter())
  root = std_logging.getLogger()
  previous = root.level
  root.setLevel(min(previous, std_logging.INFO))
  logging.get_absl_logger().setLevel(std_logging.INFO)
  root.addHandler(handler)
  try:
    yield
  finally:
    root.removeHandler(handler)
    root.setLevel(previous)
    handler.close()


def is_tty(stream=None) -> bool:
  stream = stream or sys.stderr
  return hasattr(stream, "isatty") and stream.isatty()


def bar(**kwargs):
  """A tqdm bar on stderr when it is a terminal; a no-op bar otherwise."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(file=sys.stderr, disable=not is_tty(), dynamic_ncols=True,
              **kwargs)


def say(line: str) -> None:
  """A line on stdout that does not break a progress bar."""
  if is_tty():
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    tqdm.write(line, file=sys.stdout)
  else:
    print(line, flush=True)


def headline(metrics: dict, limit: int = 2) -> str:
  """'loss 0.3418, dice 0.8565, ...': the loss and `limit` task scores."""
  keys = [k for k in HEADLINE if k in metrics][:limit]
  keys = (["loss"] if "loss" in metrics else []) + keys
  return ", ".join(f"{k} {float(metrics[k]):.4f}" for k in keys)


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return (f"{hours}h{rest // 60:02d}m" if hours else
          f"{rest // 60}m{rest % 60:02d}s")


class TrainProgress:
  """The training bar (TTY) or a line per log point (not a TTY)."""

  def __init__(self, total: int, initial: int):
    self.total = total
    self.bar = bar(total=total, initial=initial, unit="step", desc="train",
                   smoothing=0.3)
    self.tty = not self.bar.disable
    self.mark = (initial, time.perf_counter())

  def step(self) -> None:
    self.bar.update(1)

  def pause(self):
    """Evaluation time is not training time: the rate skips it."""
    return _Paused(self)

  def logged(self, step: int, train: dict) -> None:
    loss = train.get("loss")
    if self.tty:
      if loss is not None:
        self.bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
      return
    start, since = self.mark
    now = time.perf_counter()
    rate = (step - start) / max(now - since, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else 0.0
    self.mark = (step, now)
    say(f"step {step}/{self.total}: train {headline(train, 0)}, "
        f"{rate:.2f} steps/s, {duration(eta)} left")

  def evaluated(self, step: int, split: str, metrics: dict) -> None:
    say(f"step {step}/{self.total}: {split} {headline(metrics)}")

  def close(self) -> None:
    self.bar.close()


class _Paused:

  def __init__(self, progress: TrainProgress):
    self.progress = progress

  def __enter__(self):
    self.started = time.perf_counter()

  def __exit__(self, *exc):
    step, since = self.progress.mark
    self.progress.mark = (step, since + time.perf_counter() - self.started)
    self.progress.bar.unpause()


class PredictProgress:
  """Predict's images done (a bar on a terminal, else a line each) and tile
  batches run (in the bar; without one, a line every 30 s), so a huge
  image shows it is moving. Counts the batches by wrapping
  `segment.predict_tiles` until `close`."""

  EVERY_SECONDS = 30

  def __init__(self, segment, total: int):
    self.bar = bar(total=total, desc="predict", unit="image")
    self.total, self.done, self.batches = total, 0, 0
    self.segment, self.own = segment, vars(segment).get("predict_tiles")
    predict_tiles = segment.predict_tiles

    self.last_line = time.perf_counter()

    def counted(tiles):
      self.batches += 1
      self.bar.set_postfix_str(f"{self.batches} tile batches", refresh=False)
      self.bar.refresh()
      now = time.perf_counter()
      if self.bar.disable and now - self.last_line > self.EVERY_SECONDS:
        say(f"{self.batches} tile batches done ({self.done}/{self.total} "
            "images)")
        self.last_line = now
      return predict_tiles(tiles)
    segment.predict_tiles = counted  # until `close`

  def image_done(self, path: str) -> None:
    self.done += 1
    self.last_line = time.perf_counter()
    self.bar.update(1)
    if self.bar.disable and self.total > 1:
      say(f"[{self.done}/{self.total}] {os.path.basename(path)}")

  def close(self) -> None:
    self.bar.close()
    if self.own is None:
      del self.segment.predict_tiles
    else:
      self.segment.predict_tiles = self.own

