"""The MNIST CNN and the variants students compare.

A 21,578-parameter CNN (3x3 convs of 8, 16, 32 filters, two 2x2 max-pools
28->14->7, dense to 10 classes; layer table in unetjax/models/cnn.py) on
TFDS `mnist`: 55,000 train, the last 5,000 of TFDS's train split for
validation, TFDS's 10,000 test images. Baseline: ReLU, conv->act->pool,
SGD with momentum 0.9 at lr 0.01, batch 64, 5 epochs. Expect roughly 98-99%
test accuracy. Needs the TFDS download (about 11 MB) on first use, or
`--config.data.dir=FOLDER` with the four original IDX files (raw or .gz,
also in FOLDER/MNIST/raw/), read without TFDS (unetjax/datasets/mnist_idx.py).

  python -m unetjax.main --config configs/mnist_cnn.py --workdir workdirs/mnist_cnn
  python -m unetjax.main --config configs/mnist_cnn.py --workdir workdirs/mnist_cnn \
      --config.data.dir=../shared/data/mnist

Variants, each one override (combine them freely):

  pool, then activation   --config.model.order=conv_pool_act
  sigmoid activation      --config.model.activation=sigmoid
  Adam at lr 1e-3         --config.optimizer.name=adam --config.optimizer.learning_rate=1e-3
  + BatchNorm             --config.model.batchnorm=True
  + step LR scheduler     --config.schedule.name=step --config.schedule.step_size_epochs=1 --config.schedule.gamma=0.7
  + dropout               --config.model.dropout=0.25
  SGD without momentum    --config.optimizer.momentum=0
  Nesterov momentum       --config.optimizer.nesterov=True
  other data              --config.data.name=fashion_mnist  (or cifar10 with --config.model.image_size=32)

For ReLU and sigmoid (any activation that never decreases) pooling first
computes the same function, only cheaper; gelu, silu or mish tell the two
orders apart. Each run writes metrics.json (test accuracy, per-class
accuracy, train_seconds) and plots/confusion_matrix.png.

The comparison as one command (docs/classification.md has the measured
table):

  python -m unetjax.sweep --config configs/mnist_cnn.py --sweep variants \
      --root workdirs/sweeps/mnist --set data.dir=../shared/data/mnist

Sweep `variants` follows the workload's recipe: batch 128, 40 epochs (one
evaluation per epoch, 429 steps), SGD at lr 0.01 unless the variant
changes it. Where the workload is silent this file chooses: SGD keeps
momentum 0.9 (the package's SGD baseline); "SGD vs Adam" is Adam at the
same lr 0.01, then "Adam at 1e-3"; BatchNorm and then StepLR are added
cumulatively, both on top of Adam at 1e-3 and on top of SGD at lr 0.05
(BatchNorm is what allows the higher lr); StepLR divides the lr by 5
(gamma 0.2) every 10 epochs. The SGD lr 0.05 for the best variant
(BatchNorm + StepLR) was chosen by validation accuracy among the four
recipes of sweep `bn_steplr_recipes` (docs/classification.md), not by
test accuracy. The MLP trial trains configs/mnist_mlp.py under the same
recipe. `--set num_epochs=N` shortens every trial alike.
"""
from unetjax.runtime.config import base_config


def get_config():
  config = base_config()
  config.model = dict(name="cnn", image_size=28, features=(8, 16, 32),
                      order="conv_act_pool", activation="relu",
                      batchnorm=False, bn_momentum=0.9, dropout=0.0)
  config.data = dict(name="mnist", train_examples=0, val_examples=5000,
                     data_dir="", download=True, dir="")
  config.task = dict(name="classification")
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.batch_size = 64
  config.eval_batch_size = 500
  config.num_steps = 0
  config.num_epochs = 5  # 859 steps each
  config.log_every_steps = 100
  config.eval_every_steps = 859
  config.best_metric = "val/accuracy"
  config.best_mode = "max"
  return config


RECIPE = {"batch_size": 128, "num_epochs": 40, "eval_every_steps": 429}
ADAM_1E3 = {"optimizer.name": "adam", "optimizer.learning_rate": 1e-3}
STEP_LR = {"schedule.name": "step", "schedule.step_size_epochs": 10,
           "schedule.gamma": 0.2}
BN_SGD = {"model.batchnorm": True, "optimizer.learning_rate": 0.05}


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  variants = [
      {"trial": "mlp", "config": "mnist_mlp.py"},
      {"trial": "cnn"},
      {"trial": "cnn_pool_first", "model.order": "conv_pool_act"},
      {"trial": "cnn_sigmoid", "model.activation": "sigmoid"},
      {"trial": "cnn_adam_lr0.01", "optimizer.name": "adam"},
      {"trial": "cnn_adam_lr1e-3", **ADAM_1E3},
      {"trial": "cnn_adam_bn", **ADAM_1E3, "model.batchnorm": True},
      {"trial": "cnn_adam_bn_steplr", **ADAM_1E3, "model.batchnorm": True,
       **STEP_LR},
      {"trial": "cnn_bn", **BN_SGD},
      {"trial": "cnn_bn_steplr", **BN_SGD, **STEP_LR},
  ]
  # The best variant's optimizer, chosen by validation accuracy.
  bn_steplr_recipes = [
      {"trial": "adam_lr1e-3", **ADAM_1E3, "model.batchnorm": True,
       **STEP_LR},
      {"trial": "adam_lr1e-3_step1_gamma0.7", **ADAM_1E3,
       "model.batchnorm": True, **STEP_LR, "schedule.step_size_epochs": 1,
       "schedule.gamma": 0.7},
      {"trial": "sgd_lr0.1", **BN_SGD, **STEP_LR,
       "optimizer.learning_rate": 0.1},
      {"trial": "sgd_lr0.05", **BN_SGD, **STEP_LR},
  ]
  return {
      "variants": [{**RECIPE, **trial} for trial in variants],
      "mlp_vs_cnn": [{**RECIPE, **trial} for trial in variants[:2]],
      "bn_steplr_recipes": [{**RECIPE, **trial}
                            for trial in bn_steplr_recipes],
  }


def get_sweep_columns():
  """The workload's table: size, time and test accuracy per variant."""
  columns = ["num_params", "train_seconds", "train/loss", "val/loss",
             "val/accuracy", "test/accuracy"]
  return {"variants": columns, "mlp_vs_cnn": columns,
          "bn_steplr_recipes": columns}
