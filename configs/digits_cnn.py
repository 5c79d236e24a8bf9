"""The embedded classification experiment: the MNIST CNN on real digits.

scikit-learn's 1,797 handwritten digits (8x8 scans resized to 28x28; 1,257
train, 180 val, 360 test, stratified, seed 0), no download, with the CNN of
configs/mnist_cnn.py plus BatchNorm (21,634 parameters: BatchNorm's scale
and shift replace the conv biases). Adam at 3e-3 with cosine decay, batch
32, 20 epochs. Measured on 2 shared CPU cores: 98.6% test accuracy (5 of
360 wrong) for two model seeds, about 75 s for the whole command.

  python -m unetjax.main --config configs/digits_cnn.py --workdir workdirs/digits_cnn

Without BatchNorm (--config.model.batchnorm=False, the 21,578-parameter
baseline) it reached 97.5-97.8% test accuracy: 1,257 training images
overfit it (train loss near 0 by epoch 8). Every variant override listed in
configs/mnist_cnn.py applies here too.
"""
from configs import mnist_cnn


def get_config():
  config = mnist_cnn.get_config()
  config.model.batchnorm = True
  config.data = dict(name="digits", train_examples=0, val_fraction=0.1,
                     test_fraction=0.2, seed=0)
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-3
  config.schedule.name = "cosine"
  config.batch_size = 32
  config.eval_batch_size = 180
  config.num_epochs = 20  # 39 steps each
  config.log_every_steps = 39
  config.eval_every_steps = 195  # every 5 epochs
  return config
