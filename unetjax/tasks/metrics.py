"""CLU metric types the tasks build their collections from.

Tasks emit per-example arrays plus a `mask` (0 for the padding that fills
the last eval batch); every metric here ignores masked examples, so padding
never counts. Kept free of `from __future__ import annotations`: CLU reads
the annotations of a Collection at run time.
"""
import flax
import jax.numpy as jnp
from clu import metrics


def ratio_of_sums(numerator: str, denominator: str, empty: float = 1.0):
  """sum(numerator) / sum(denominator) over the set, `empty` when 0/0.

  This is Dice or IoU "over the set": pixels pooled across images, so large
  and small objects weigh by their area, unlike a mean of per-image scores.
  """

  @flax.struct.dataclass
  class RatioOfSums(metrics.Metric):
    num: jnp.ndarray
    den: jnp.ndarray

    @classmethod
    def empty(cls):
      return cls(num=jnp.zeros((), jnp.float32), den=jnp.zeros((), jnp.float32))

    @classmethod
    def from_model_output(cls, **outputs):
      mask = outputs["mask"].astype(jnp.float32)
      return cls(num=jnp.sum(outputs[numerator] * mask),
                 den=jnp.sum(outputs[denominator] * mask))

    def merge(self, other):
      return type(self)(num=self.num + other.num, den=self.den + other.den)

    def compute(self):
      return jnp.where(self.den > 0, self.num / jnp.maximum(self.den, 1e-12),
                       empty)

  return RatioOfSums


def confusion_matrix(num_classes: int):
  """Counts of (true class, predicted class), from per-example count maps.

  The task emits `confusion`: per example a [num_classes, num_classes]
  count matrix (one entry for a classifier, one per pixel for segmentation).
  `compute` returns the summed matrix; rows are the true class.
  """

  @flax.struct.dataclass
  class ConfusionMatrix(metrics.Metric):
    counts: jnp.ndarray

    @classmethod
    def empty(cls):
      return cls(counts=jnp.zeros((num_classes, num_classes), jnp.float32))

    @classmethod
    def from_model_output(cls, **outputs):
      mask = outputs["mask"].astype(jnp.float32)
      return cls(counts=jnp.einsum("nij,n->ij", outputs["confusion"], mask))

    def merge(self, other):
      return type(self)(counts=self.counts + other.counts)

    def compute(self):
      return self.counts

  return ConfusionMatrix


def scalars(computed: dict) -> dict[str, float]:
  """The scalar entries of `collection.compute()`, as Python floats."""
  return {k: float(v) for k, v in computed.items() if jnp.ndim(v) == 0}
