"""Evaluate a saved checkpoint on a split: `python -m unetjax.evaluate`.

  python -m unetjax.evaluate --workdir workdirs/cells --checkpoint best \
      --split test

Rebuilds the experiment from the workdir's config.json, restores the chosen
checkpoint ('best', 'latest' or a step) and writes, under --out (default
`workdir/eval`):

  eval_<split>_<step>.json      every task metric over the split
  examples_<split>_<step>.csv   one row per example: its id and its scores
                                (or, for a classifier, true and predicted
                                class; for instance segmentation its object
                                scores and counts too), worst first by the
                                task's per-example metric
  worst_<split>_<step>/, best_<split>_<step>/
                                the task's sample figures of the examples
                                that metric ranks worst and best
  examples_<split>_<step>.png,  classifiers only: the worst and best images
  confusion_<split>_<step>.png  and the confusion matrix

The metrics come from the trainer's own evaluation, so they equal what
training logged for the same checkpoint and split.
"""
import csv
import json
import os
import sys
from typing import Any

import numpy as np
from absl import flags

from unetjax import data as datasets
from unetjax.inference import trained
from unetjax.runtime import cli, console
from unetjax.runtime.errors import ConfigError
from unetjax.training import evaluation, parallel
from unetjax.training import experiment as experiment_lib
from unetjax.training import steps as steps_lib
from unetjax.viz import plots

FLAGS = flags.FLAGS


def evaluate_workdir(workdir: str, *, checkpoint: str = "best",
                     split: str = "test", out: str | None = None,
                     num_examples: int = 4) -> dict[str, Any]:
  """Writes the files listed in the module docstring; returns the report."""
  if isinstance(num_examples, bool) or not isinstance(
      num_examples, int) or num_examples < 1:
    raise ConfigError(f"--num_examples={num_examples}: expected a positive "
                      "number of examples to draw")
  out = out or os.path.join(workdir, "eval")
  if os.path.exists(out) and not os.path.isdir(out):
    raise ConfigError(f"--out={out}: is a file; expected a directory")
  # Only the scored split is read (the model comes from experiment.json).
  experiment, state, step = trained.restore_for_split(workdir, checkpoint,
                                                      split)
  data = _split(experiment, split)
  steps = steps_lib.jit_steps(experiment)
  computed = evaluation.evaluate(experiment, steps, state, data)
  columns = example_columns(experiment, steps, state, data)
  tag = f"{split}_{step}"
  report = {"workdir": os.path.abspath(workdir), "checkpoint_step": step,
            "split": split, "num_examples": len(data),
            "metrics": {k: np.asarray(v).tolist() for k, v in
                        computed.items()}}
  _write_json(os.path.join(out, f"eval_{tag}.json"), report)
  metric = experiment.task.per_example_metric
  order = np.argsort(columns[metric], kind="stable")
  _write_csv(os.path.join(out, f"examples_{tag}.csv"),
             {k: v[order] for k, v in columns.items()})
  count = min(num_examples, len(data), experiment.config.eval_batch_size)
  picks = {"worst": order[:count], "best": order[::-1][:count]}
  if "true_class" in columns:
    _draw_classifier(experiment, data, columns, picks, metric, out, tag)
  else:
    for name, indices in picks.items():
      subset = data.select(indices)
      batch, predictions, outputs = evaluation.first_predictions(
          experiment, steps, state, subset, count)
      experiment.task.figures(batch, predictions, outputs, computed,
                              os.path.join(out, f"{name}_{tag}"))
  return report


def _split(experiment: experiment_lib.Experiment,
           name: str) -> datasets.Split:
  """The split as an evaluation reads it. A task's `prepare` gives the
  training split only what training reads (the instance task drops the
  instance ids the object scores need), so evaluating it prepares it
  again as an evaluated split."""
  if name != "train" or not hasattr(experiment.task, "prepare"):
    return experiment.dataset.split(name)
  experiment.dataset.split(name)  # an unknown split fails as usual
  raw = datasets.build(experiment.config)
  return datasets.apply_transform(raw.split(name), experiment.task.prepare,
                                  "evaluated train")


def example_columns(experiment: experiment_lib.Experiment, steps: steps_lib.Steps,
                    state, split: datasets.Split) -> dict[str, np.ndarray]:
  """Per-example columns: id, every per-example task output, and for
  classifiers (one label per example) the true and predicted class."""
  sharding = parallel.data_sharding(experiment.mesh)
  parts = []
  for local in evaluation.eval_batches(experiment, split):
    predictions, outputs = steps.predict(
        state, parallel.global_batch(local, sharding))
    keep = local["mask"] > 0
    part = {k: parallel.to_host(v)[keep] for k, v in outputs.items()
            if k != "mask" and np.ndim(v) == 1}
    if not split.spatial:  # one class per example
      part["true_class"] = local["label"][keep]
      part["predicted_class"] = parallel.to_host(predictions)[keep].argmax(-1)
    if hasattr(experiment.task, "object_scores"):
      rows = experiment.task.object_scores(local,
                                           parallel.local_rows(predictions))
      part.update({k: np.array([row[k] for row in rows]) for k in rows[0]
                   if np.ndim(rows[0][k]) == 0})
    part["index"] = local["index"][keep]
    parts.append(part)
  columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  ids = np.asarray(split.ids)[columns.pop("index")]
  return {"id": ids, **columns}


def _draw_classifier(experiment, split, columns, picks, metric, out,
                     tag) -> None:
  names = experiment.dataset.info.class_names
  from sklearn.metrics import confusion_matrix  # pylint: disable=g-import-not-at-top
  counts = confusion_matrix(columns["true_class"], columns["predicted_class"],
                            labels=range(len(names)))
  plots.confusion_matrix(counts, list(names),
                         os.path.join(out, f"confusion_{tag}.png"),
                         title=f"{len(split)} examples")
  index = {example_id: i for i, example_id in enumerate(split.ids)}
  rows = []
  for kind, picked in picks.items():
    for i in picked:
      rows.append((split.images[index[columns["id"][i]]],
                   f"{kind}: {columns['id'][i]}\ntrue "
                   f"{names[columns['true_class'][i]]}, predicted "
                   f"{names[columns['predicted_class'][i]]}\n{metric} "
                   f"{columns[metric][i]:.3f}"))
  plots.image_grid([image for image, _ in rows], [t for _, t in rows],
                   os.path.join(out, f"examples_{tag}.png"),
                   columns=len(picks["worst"]))


def _write_json(path: str, record: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(path + ".tmp", path)


def _write_csv(path: str, columns: dict[str, np.ndarray]) -> None:
  with open(path + ".tmp", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(zip(*(v.tolist() for v in columns.values())))
  os.replace(path + ".tmp", path)


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_library_logs(read_only=True)
  console.quiet_terminal()  # no TPU-backend INFO line on a CPU machine
  with cli.user_errors():
    parallel.initialize_distributed()  # XLA flags, compilation cache
    report = evaluate_workdir(FLAGS.workdir, checkpoint=FLAGS.checkpoint,
                              split=FLAGS.split, out=FLAGS.out,
                              num_examples=FLAGS.num_examples)
  print(f"Checkpoint {report['checkpoint_step']} on {report['split']} "
        f"({report['num_examples']} examples): " + ", ".join(
            f"{k} {v:.4f}" for k, v in report["metrics"].items()
            if np.ndim(v) == 0))
  print(f"Written to {FLAGS.out or os.path.join(FLAGS.workdir, 'eval')}")


def run(argv: list[str] | None = None):
  """Console-script entry point (`unetjax-evaluate`).

  Flags are defined here, not on import, so the tools can be imported
  together (they share flag names).
  """
  flags.DEFINE_string("workdir", None, "Workdir of a training run.",
                      required=True)
  flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step.")
  flags.DEFINE_string("split", "test", "Split of the workdir's dataset.")
  flags.DEFINE_string("out", None, "Output directory; default workdir/eval.")
  flags.DEFINE_integer("num_examples", 4, "How many of the worst and of the "
                       "best examples to draw.")
  cli.run(main, sys.modules[__name__], argv)


if __name__ == "__main__":
  run()
