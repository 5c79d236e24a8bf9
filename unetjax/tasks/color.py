"""sRGB <-> CIE Lab in JAX, as scikit-image computes it (D65, 2 degrees).

Colorization predicts in Lab because L is the grayscale input and a, b are
the colour left to guess; the conversion runs inside the jitted step, so
it is written in `jnp` rather than called from scikit-image.
"""
import jax.numpy as jnp
import numpy as np

# sRGB primaries to CIE XYZ, and the D65 white point (scikit-image's values).
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                          [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]])
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_EPSILON = 0.008856  # (6/29)**3: where the Lab curve turns linear
_KAPPA = 7.787


def rgb_to_lab(rgb):
  """[..., 3] sRGB in [0, 1] -> Lab with L in [0, 100], a, b about +-128."""
  rgb = jnp.asarray(rgb, jnp.float32)
  linear = jnp.where(rgb > 0.04045,
                     ((jnp.maximum(rgb, 0.04045) + 0.055) / 1.055) ** 2.4,
                     rgb / 12.92)
  xyz = linear @ _XYZ_FROM_RGB.T.astype(np.float32) / _WHITE_D65.astype(
      np.float32)
  f = jnp.where(xyz > _EPSILON, jnp.cbrt(jnp.maximum(xyz, _EPSILON)),
                _KAPPA * xyz + 16 / 116)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return jnp.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], -1)


def lab_to_rgb(lab):
  """Lab -> [..., 3] sRGB clipped to [0, 1] (out-of-gamut colours clip)."""
  lab = jnp.asarray(lab, jnp.float32)
  fy = (lab[..., 0] + 16) / 116
  fx = fy + lab[..., 1] / 500
  fz = jnp.maximum(fy - lab[..., 2] / 200, 0.0)
  f = jnp.stack([fx, fy, fz], -1)
  xyz = jnp.where(f > 0.2068966, f ** 3, (f - 16 / 116) / _KAPPA)
  linear = xyz * _WHITE_D65.astype(np.float32) @ _RGB_FROM_XYZ.T.astype(
      np.float32)
  rgb = jnp.where(linear > 0.0031308,
                  1.055 * jnp.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055,
                  12.92 * linear)
  return jnp.clip(rgb, 0.0, 1.0)


def rgb_to_gray(rgb):
  """Lightness L of sRGB, scaled to [0, 1]: the colorization input."""
  return rgb_to_lab(rgb)[..., :1] / 100.0
