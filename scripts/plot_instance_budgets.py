"""Test scores against training minutes, one line per tool, from the JSON
reports of `unetjax-benchmark --instances --minutes M --json FILE`.

  python scripts/plot_instance_budgets.py instances_10min.json \\
      instances_30min.json --out docs/figures/instances_budget.png

Each report is one budget (its rows: the package, StarDist, Cellpose);
the figure has test AP@0.5 (mean over images, as the challenge averages)
and the challenge score (IoU 0.5 to 0.95) against the budget, and prints
the points as a markdown table. A failed row is left out and named.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

_PANELS = (("ap50", "test AP@0.5"), ("challenge_score", "test challenge score"))


def points(paths: list[str]) -> dict[str, list[tuple[float, dict]]]:
  """{tool: [(minutes, row)]} sorted by minutes, from the reports."""
  by_tool = {}
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        report = json.load(f)
      rows = report["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      sys.exit(f"error: {path}: not a benchmark report of "
               f"`unetjax-benchmark --instances --json` ({e})")
    for row in rows:
      if "scores" not in row:
        print(f"{path}: {row['tool']} has no scores "
              f"({row.get('error', 'failed')}); left out", file=sys.stderr)
        continue
      by_tool.setdefault(row["tool"], []).append((row["minutes"], row))
  return {tool: sorted(rows, key=lambda p: p[0])
          for tool, rows in by_tool.items()}


def plot(by_tool: dict, out: str) -> None:
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, (key, title) in zip(axes, _PANELS):
    for tool, rows in by_tool.items():
      minutes = [m for m, _ in rows]
      ax.plot(minutes, [row["scores"][key] for _, row in rows], "o-",
              label=tool)
    ax.set_xlabel("training budget (minutes, 2 CPU cores)")
    ax.set_title(title)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(out, dpi=100)


def table(by_tool: dict) -> str:
  lines = ["| tool | minutes | steps | test AP@0.5 | challenge |",
           "| --- | --- | --- | --- | --- |"]
  for tool, rows in by_tool.items():
    for minutes, row in rows:
      lines.append(f"| {tool} | {minutes:g} | {row['steps']} | "
                   f"{row['scores']['ap50']:.3f} | "
                   f"{row['scores']['challenge_score']:.3f} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("reports", nargs="+", help="benchmark JSON files")
  parser.add_argument("--out", required=True, help="the PNG to write")
  args = parser.parse_args()
  if not args.out.endswith(".png"):
    sys.exit(f"error: --out={args.out}: expected a .png path")
  by_tool = points(args.reports)
  if not by_tool:
    sys.exit("error: no report has a scored row")
  plot(by_tool, args.out)
  print(table(by_tool))


if __name__ == "__main__":
  main()
