"""The evaluation's progress bar knows its length for every split."""
import types

import ml_collections
import numpy as np
import pytest

from unetjax.data import Split
from unetjax.training import evaluation


def _experiment(eval_batch_size):
  config = ml_collections.ConfigDict(dict(
      eval_batch_size=eval_batch_size, model=dict(name="unet"), data={}))
  return types.SimpleNamespace(config=config)


def _split(sizes):
  n = len(sizes)
  height, width = np.max(sizes, axis=0)
  return Split(images=np.zeros((n, height, width, 1), np.uint8),
               labels=np.zeros((n, height, width), np.int32),
               ids=tuple(f"e{i}" for i in range(n)),
               sizes=None if len(set(map(tuple, sizes))) == 1
               else np.array(sizes, np.int32))


@pytest.mark.parametrize("sizes,batch", [
    ([(32, 32)] * 5, 2),                                  # one size: 3
    ([(32, 32), (64, 32), (32, 96), (64, 64), (96, 96)], 2),  # varied: 3
    ([(32, 64)] * 4 + [(64, 32)] * 3, 4),                 # varied: 2
])
def test_the_bar_total_is_the_number_of_batches_evaluated(sizes, batch):
  split = _split(sizes)
  bar = evaluation._counted(_experiment(batch), split)
  batches = list(bar)
  # ceil(n / batch): 5 examples in batches of 2 are 3 batches
  assert bar.total == len(batches) == -(-len(sizes) // batch)
