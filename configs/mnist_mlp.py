"""The MNIST MLP baseline: 784-100-10 with ReLU, 79,510 parameters.

TFDS `mnist` as in configs/mnist_cnn.py (55,000 / 5,000 / 10,000), SGD with
momentum 0.9 at lr 0.01, batch 64, 5 epochs. Expect roughly 97% test
accuracy (not measured here, see configs/mnist_cnn.py), below the CNN's
with almost 4x its parameters.

  python -m unetjax.main --config configs/mnist_mlp.py --workdir workdirs/mnist_mlp

Variants: --config.model.hidden_sizes='(256, 128)' (deeper, wider),
--config.model.activation=sigmoid, --config.model.dropout=0.2, and the
optimizer and schedule overrides listed in configs/mnist_cnn.py.

Sweeps: `mlp_vs_cnn` (this MLP against the CNN of configs/mnist_cnn.py, the
workload's recipe: batch 128, 40 epochs, SGD at 0.01) and `activation`
(ReLU against sigmoid), e.g.

  python -m unetjax.sweep --config configs/mnist_mlp.py --sweep mlp_vs_cnn \
      --root workdirs/sweeps/mlp_vs_cnn --set data.dir=../shared/data/mnist
"""
from configs import mnist_cnn


def get_config():
  config = mnist_cnn.get_config()
  config.model = dict(name="mlp", image_size=28, hidden_sizes=(100,),
                      activation="relu", dropout=0.0)
  return config


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  recipe = mnist_cnn.RECIPE
  return {
      "mlp_vs_cnn": [{"trial": "mlp", **recipe},
                     {"trial": "cnn", "config": "mnist_cnn.py", **recipe}],
      "activation": [{"trial": "mlp_relu", **recipe},
                     {"trial": "mlp_sigmoid", **recipe,
                      "model.activation": "sigmoid"}],
  }


def get_sweep_columns():
  return {name: mnist_cnn.get_sweep_columns()["variants"]
          for name in get_sweeps()}
