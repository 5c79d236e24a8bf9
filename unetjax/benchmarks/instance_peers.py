"""The peers of `unetjax-benchmark --instances`: StarDist and Cellpose,
trained, predicting and scored in their own environment.

Run by path with the peers' Python (`--peer-python`), never imported by the
package: it imports nothing of unetjax (that environment need not have
jax), only numpy, tifffile and the peer. Each call is one fresh process
and prints one JSON line last:

  python instance_peers.py train stardist|cellpose DATA OUT SECONDS
  python instance_peers.py predict stardist|cellpose DATA OUT
  python instance_peers.py score TRUTH_DIR PRED_DIR

DATA holds `{train,val,test}/images/<id>.tif` (gray uint8) and
`.../masks/<id>.tif` (instance ids), written by the benchmark from the
package's split. Training stops once SECONDS have passed since the tool's
training call began (its own preparation, such as Cellpose's flows,
counted); predictions go to OUT/pred/<id>.tif at native size.

The tools' documented defaults, and what is changed (and why):
* StarDist 0.9: `Config2D(n_rays=32, grid=(2, 2), n_channel_in=1)`, every
  other setting its default (U-Net depth 3, 32 filters, patch 256, batch 4,
  lr 3e-4, ReduceLROnPlateau); input `csbdeep.utils.normalize(x, 1, 99.8)`
  per image; its example notebook's augmenter (random flips, 90-degree
  turns, intensity scale 0.6-2 and shift -0.2-0.2); label holes filled
  (`fill_label_holes`), as the notebook does; `optimize_thresholds` on the
  validation split after training (its documented workflow; timed apart).
  Changed: training stops at the budget (a Keras callback) instead of after
  400 x 100 steps.
* Cellpose 3.1: `CellposeModel(gpu=False, pretrained_model=None)` (from
  scratch: no weights can be downloaded here) and `train.train_seg` with
  its defaults (AdamW lr 0.005, weight decay 1e-5, batch 8, 224-px tiles,
  rescaling to the mean diameter, its own 1-99 percentile normalisation),
  gray input (`channels=[0, 0]`); predicting with `diameter=diam_labels`
  (the training set's mean diameter, as its custom-model docs do). Changed:
  the epochs are sized to the budget instead of 2000 epochs of all
  training images: a step is timed first (three one-batch epochs), then
  about 250 epochs of `nimg_per_epoch = 8 * k` images fill 90% of what
  is left, so its learning-rate schedule (10 epochs of warm-up from 0,
  halvings over the last 50-100) keeps its shape; validation loss on 8
  images (`nimg_test_per_epoch`); and a hard stop at the budget.
"""
import json
import os
import resource
import sys
import time

import numpy as np
import tifffile


def _read_split(data: str, split: str):
  folder = os.path.join(data, split)
  names = sorted(f[:-4] for f in os.listdir(os.path.join(folder, "images"))
                 if f.endswith(".tif"))
  images = [tifffile.imread(os.path.join(folder, "images", f"{n}.tif"))
            for n in names]
  masks = [tifffile.imread(os.path.join(folder, "masks", f"{n}.tif"))
           for n in names]
  return names, images, masks


def _peak_rss() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _write(out: str, name: str, labels) -> None:
  os.makedirs(os.path.join(out, "pred"), exist_ok=True)
  tifffile.imwrite(os.path.join(out, "pred", f"{name}.tif"),
                   np.asarray(labels).astype(np.int32))


# --- StarDist ----------------------------------------------------------------

def _stardist_augmenter(x, y):
  """The StarDist 2D example notebook's augmenter."""
  axes = tuple(range(y.ndim))
  perm = tuple(np.random.permutation(axes))
  x, y = x.transpose(perm + tuple(range(y.ndim, x.ndim))), y.transpose(perm)
  for ax in axes:
    if np.random.rand() > 0.5:
      x, y = np.flip(x, axis=ax), np.flip(y, axis=ax)
  x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
  return x, y


def train_stardist(data: str, out: str, seconds: float) -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  from csbdeep.utils import normalize  # pylint: disable=g-import-not-at-top
  from stardist import fill_label_holes  # pylint: disable=g-import-not-at-top
  from stardist.models import Config2D, StarDist2D  # pylint: disable=g-import-not-at-top
  _, x_train, y_train = _read_split(data, "train")
  _, x_val, y_val = _read_split(data, "val")
  started = time.perf_counter()
  x_train = [normalize(x, 1, 99.8, axis=(0, 1)) for x in x_train]
  x_val = [normalize(x, 1, 99.8, axis=(0, 1)) for x in x_val]
  y_train = [fill_label_holes(y) for y in y_train]
  y_val = [fill_label_holes(y) for y in y_val]
  config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, use_gpu=False)
  model = StarDist2D(config, name="stardist", basedir=out)
  steps = {"n": 0}

  class Budget(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      steps["n"] += 1
      if time.perf_counter() - started >= seconds:
        self.model.stop_training = True

  model.prepare_for_training()
  model.callbacks.append(Budget())
  model.train(x_train, y_train, validation_data=(x_val, y_val),
              augmenter=_stardist_augmenter)
  train_s = time.perf_counter() - started
  tuned = time.perf_counter()
  model.optimize_thresholds(x_val, y_val)
  return {"steps": steps["n"], "train_seconds": train_s,
          "threshold_seconds": time.perf_counter() - tuned,
          "params": int(model.keras_model.count_params()),
          "batch_size": config.train_batch_size,
          "thresholds": dict(model.thresholds._asdict())}


def predict_stardist(data: str, out: str) -> dict:
  from csbdeep.utils import normalize  # pylint: disable=g-import-not-at-top
  from stardist.models import StarDist2D  # pylint: disable=g-import-not-at-top
  names, images, _ = _read_split(data, "test")
  model = StarDist2D(None, name="stardist", basedir=out)
  started = time.perf_counter()
  for name, image in zip(names, images):
    labels, _ = model.predict_instances(normalize(image, 1, 99.8,
                                                  axis=(0, 1)))
    _write(out, name, labels)
  return {"images": len(names),
          "predict_loop_seconds": time.perf_counter() - started}


# --- Cellpose ----------------------------------------------------------------

class _Budget(Exception):
  pass


def train_cellpose(data: str, out: str, seconds: float) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from cellpose import dynamics, models, train  # pylint: disable=g-import-not-at-top
  _, x_train, y_train = _read_split(data, "train")
  _, x_val, y_val = _read_split(data, "val")
  started = time.perf_counter()
  torch.manual_seed(0)
  model = models.CellposeModel(gpu=False, pretrained_model=None)
  # Flows once, inside the budget; train_seg takes them precomputed.
  flows_train = dynamics.labels_to_flows(y_train, device=model.device)
  flows_val = dynamics.labels_to_flows(y_val, device=model.device)
  steps = {"n": 0, "times": []}
  loss_fn = train._loss_fn_seg  # pylint: disable=protected-access

  def counted(lbl, y, device):
    if torch.is_grad_enabled():  # a training step, not its test loss
      now = time.perf_counter()
      if now - started >= seconds:
        raise _Budget()
      steps["n"] += 1
      steps["times"].append(now)
    return loss_fn(lbl, y, device)

  train._loss_fn_seg = counted  # pylint: disable=protected-access
  common = dict(train_data=x_train, train_labels=flows_train,
                test_data=x_val, test_labels=flows_val, channels=[0, 0],
                save_path=out, model_name="cellpose", nimg_test_per_epoch=8)
  epochs, step_s, finished = 0, None, False
  try:
    # Probe: three one-batch epochs (learning rate 0 and the warm-up's
    # first steps), timed between the steps, not counting set-up.
    train.train_seg(model.net, n_epochs=3, nimg_per_epoch=8, **common)
    times = steps["times"]
    step_s = (times[-1] - times[0]) / max(len(times) - 1, 1)
    remaining = 0.9 * (seconds - (time.perf_counter() - started))
    planned = max(1, int(remaining / max(step_s, 1e-3)))
    # Cellpose's schedule counts epochs (10 of warm-up from 0, halvings
    # over the last 50-100); an epoch of all 478 images is ~60 steps, more
    # than a short budget holds. So an epoch is as many batches as make
    # the plan about 250 epochs (one batch each below that), and the
    # warm-up and halvings keep their share of the run.
    per_epoch = max(1, planned // 250)
    epochs = max(1, planned // per_epoch)
    train.train_seg(model.net, n_epochs=epochs, nimg_per_epoch=8 * per_epoch,
                    **common)
    finished = True
  except _Budget:
    model.net.save_model(os.path.join(out, "models", "cellpose"))
  return {"steps": steps["n"], "train_seconds": time.perf_counter() - started,
          "epochs": epochs, "step_seconds": step_s,
          "schedule_finished": finished, "batch_size": 8,
          "params": int(sum(p.numel() for p in model.net.parameters()))}


def predict_cellpose(data: str, out: str) -> dict:
  from cellpose import models  # pylint: disable=g-import-not-at-top
  names, images, _ = _read_split(data, "test")
  model = models.CellposeModel(
      gpu=False, pretrained_model=os.path.join(out, "models", "cellpose"))
  diameter = float(model.net.diam_labels.item())
  started = time.perf_counter()
  for name, image in zip(names, images):
    labels = model.eval(image, channels=[0, 0], diameter=diameter)[0]
    _write(out, name, labels)
  return {"images": len(names), "diameter": diameter,
          "predict_loop_seconds": time.perf_counter() - started}


# --- StarDist's own matching, as a cross-check -----------------------------

def score(truth_dir: str, pred_dir: str) -> dict:
  """`stardist.matching.matching_dataset` per image (the challenge's mean)
  and pooled (the StarDist paper's), at IoU 0.5, 0.55, ..., 0.95."""
  from stardist.matching import matching_dataset  # pylint: disable=g-import-not-at-top
  names = sorted(f[:-4] for f in os.listdir(truth_dir) if f.endswith(".tif"))
  truth = [tifffile.imread(os.path.join(truth_dir, f"{n}.tif")) for n in names]
  pred = [tifffile.imread(os.path.join(pred_dir, f"{n}.tif")) for n in names]
  thresholds = [round(0.5 + 0.05 * i, 2) for i in range(10)]
  result = {}
  for by_image in (True, False):
    stats = matching_dataset(truth, pred, thresh=thresholds,
                             by_image=by_image, show_progress=False)
    key = "by_image" if by_image else "pooled"
    result[key] = {"accuracy": [float(s.accuracy) for s in stats],
                   "f1": [float(s.f1) for s in stats]}
    result[key]["challenge_score"] = float(np.mean(result[key]["accuracy"]))
  return result


def main(argv: list[str]) -> None:
  command = argv[0]
  if command == "score":
    result = score(argv[1], argv[2])
  else:
    tool, data, out = argv[1], argv[2], argv[3]
    os.makedirs(out, exist_ok=True)
    fn = {("train", "stardist"): train_stardist,
          ("train", "cellpose"): train_cellpose,
          ("predict", "stardist"): predict_stardist,
          ("predict", "cellpose"): predict_cellpose}[(command, tool)]
    result = fn(data, out, float(argv[4])) if command == "train" else fn(
        data, out)
  result["peak_rss_bytes"] = _peak_rss()
  print(json.dumps(result))


if __name__ == "__main__":
  main(sys.argv[1:])
