"""The MNIST MLP baseline: 784-100-10 with ReLU, 79,510 parameters.

TFDS `mnist` as in configs/mnist_cnn.py (55,000 / 5,000 / 10,000), SGD with
momentum 0.9 at lr 0.01, batch 64, 5 epochs. Expect roughly 97% test
accuracy (not measured here, see configs/mnist_cnn.py), below the CNN's
with almost 4x its parameters.

  python -m unetjax.main --config configs/mnist_mlp.py --workdir workdirs/mnist_mlp

Variants: --config.model.hidden_sizes='(256, 128)' (deeper, wider),
--config.model.activation=sigmoid, --config.model.dropout=0.2, and the
optimizer and schedule overrides listed in configs/mnist_cnn.py.
"""
from configs import mnist_cnn


def get_config():
  config = mnist_cnn.get_config()
  config.model = dict(name="mlp", image_size=28, hidden_sizes=(100,),
                      activation="relu", dropout=0.0)
  return config
