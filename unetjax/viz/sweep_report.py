"""A sweep's report: results.csv, results.md and curves.png in its root."""
import csv
import json
import os

from unetjax.runtime.errors import ConfigError

# Columns from metrics.json besides `split/metric`; `trial` and `status`
# always lead the table.
FIXED_COLUMNS = ("trial", "status", "num_params", "train_seconds", "step",
                 "best_checkpoint_step")
SPLITS = ("train", "val", "test")
CURVE_METRICS = ("loss", "accuracy", "dice")  # drawn when no column names one
DEFAULT_COLUMNS = ()  # every column a row has
NOT_RUN = "not run"  # the status of an unfinished trial under --tabulate


def check_columns(columns, override_keys: set[str]) -> list[str]:
  """The table's columns, `trial` and `status` first; one line for a name
  that is no column of a sweep table."""
  for column in columns:
    split, _, metric = column.partition("/")
    if not (column in FIXED_COLUMNS or column in override_keys
            or (split in SPLITS and metric)):
      raise ConfigError(
          f"--columns: {column!r} is not a column; expected one of "
          f"{list(FIXED_COLUMNS)}, an override key of the sweep, or "
          "train/<metric>, val/<metric>, test/<metric>")
  if not columns:
    return []
  return ["trial", "status"] + [c for c in dict.fromkeys(columns)
                                if c not in ("trial", "status")]


def row(name: str, overrides: dict, workdir: str, error: str | None) -> dict:
  """One trial's row: its overrides, status and final metrics."""
  result = {"trial": name, **overrides}
  path = os.path.join(workdir, "metrics.json")
  if error == NOT_RUN:
    result["status"] = NOT_RUN
    return result
  if error or not os.path.exists(path):
    result["status"] = f"failed ({error})" if error else "failed"
    return result
  with open(path) as f:
    metrics = json.load(f)
  result["status"] = "done"
  result.update({k: metrics[k] for k in FIXED_COLUMNS[2:] if k in metrics})
  for split in SPLITS:
    result.update({f"{split}/{k}": v
                   for k, v in metrics.get(split, {}).items()})
  return result


def write_tables(root: str, rows: list[dict], columns: list[str]) -> None:
  """results.csv (full precision) and results.md (4 significant digits)."""
  if not columns:
    columns = list(dict.fromkeys(
        ["trial", "status"] + [k for r in rows for k in r]))
  with open(os.path.join(root, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  lines = ["| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |"
            for r in rows]
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def curve_metrics(columns: list[str],
                  runs: dict[str, list[dict]]) -> list[str]:
  """The metrics curves.png draws: those the columns name, else the usual."""
  logged = {k.partition("/")[2] for records in runs.values()
            for r in records for k in r if k.startswith(("train/", "val/"))}
  named = [c.partition("/")[2] for c in columns
           if c.startswith(("train/", "val/"))]
  chosen = [m for m in dict.fromkeys(named) if m in logged]
  return chosen or [m for m in CURVE_METRICS if m in logged]


def write_curves(root: str, runs: dict[str, list[dict]],
                 columns: list[str]) -> str | None:
  """curves.png: every trial's train and val curves, a colour per trial."""
  runs = {name: records for name, records in runs.items() if records}
  metrics = curve_metrics(columns, runs)
  if not metrics:
    return None
  from unetjax.viz import plots  # pylint: disable=g-import-not-at-top
  path = os.path.join(root, "curves.png")
  plots.compare_curves(runs, metrics, path,
                       title=f"{os.path.basename(os.path.abspath(root))}: "
                       "train (lines) and val (dots)")
  return path


def _cell(value) -> str:
  text = f"{value:.4g}" if isinstance(value, float) else str(value)
  return text.replace("|", "\\|")
