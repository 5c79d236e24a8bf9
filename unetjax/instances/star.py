"""Star-convex objects (StarDist; Schmidt et al., MICCAI 2018).

Each object pixel predicts its object's probability and the distances
along `n_rays` equally spaced rays to the object's boundary; an object is
the polygon of those distances around a pixel, and overlapping candidate
polygons are thinned by non-maximum suppression (NMS) on their IoU.

Conventions are StarDist's own (`stardist.geometry.star_dist`,
`dist_to_coord`), so the two read each other's numbers: ray k points at
angle phi_k = 2 pi k / n_rays, moving sin(phi_k) along rows and
cos(phi_k) along columns (ray 0 points right, ray n/4 down). From an
object pixel, a ray steps one unit at a time until it lands (rounded to
the nearest pixel) on another id or leaves the image at step t; the
distance is then t - 1 + 0.5 / max(|sin phi|, |cos phi|): the step before,
moved on to the edge of the last pixel inside. The background's distances
are 0. Example: a disc of radius r around pixel c reaches r + 0.5 along
each axis.

Why written here, not imported from the `stardist` package: its geometry
and NMS are numpy/C, but the training target must follow every crop, flip,
turn and elastic deformation of the training stream, so the distances are
cast on the augmented instance ids inside the jitted step (`distances`, in
jnp, from a sample of the object pixels: `sample_points`), where a numpy/C
function cannot run; and `stardist` as a package dependency brings numba
and csbdeep (importing `stardist.geometry` and `stardist.nms` pulls in
those two, not TensorFlow) for three functions; the benchmark runs
StarDist itself, as a peer, in an environment of its own. On a 256x320 DSB image
with 86 nuclei `stardist.geometry.star_dist` (0.9.2) gave the same
distances to 2e-5 and `stardist.edt_prob` the same probability target
(docs/instances.md).

Host side (numpy, scikit-image): `polygons`, `non_maximum_suppression`
(greedy by probability, IoU of the rasterised polygons, as StarDist's does
on exact polygon areas) and `polygons_to_label` (higher probability painted
last, on top, as in StarDist).
"""
import jax
import jax.numpy as jnp
import numpy as np
from skimage import draw

from unetjax.runtime.errors import ConfigError, DataError


def check_n_rays(n_rays) -> int:
  """`n_rays` as an int, a multiple of 4 (flips and turns map rays to rays)."""
  if not isinstance(n_rays, (int, np.integer)) or n_rays < 4 or n_rays % 4:
    raise ConfigError(f"task.n_rays={n_rays!r}: expected a multiple of 4, "
                      ">= 4 (StarDist's default is 32)")
  return int(n_rays)


def ray_angles(n_rays: int) -> np.ndarray:
  """The rays' angles phi_k = 2 pi k / n_rays (float32, StarDist's)."""
  return (np.arange(n_rays, dtype=np.float32)
          * np.float32(2 * np.pi / n_rays))


def _steps(n_rays: int):
  """(row step, column step, distance correction) per ray, float32."""
  phi = ray_angles(n_rays)
  dy, dx = np.sin(phi), np.cos(phi)
  correction = 0.5 / np.maximum(np.abs(dy), np.abs(dx)) - 1.0
  return dy, dx, correction


def distances(ids: jax.Array, points: jax.Array, n_rays: int) -> jax.Array:
  """Star distances [B, K, n_rays] (float32) of the pixels `points`
  [B, K, 2] (row, col; int) of instance ids [B, H, W].

  Traceable (jnp). Outside the image counts as background; a point on the
  background gets 0. Each step of the loop moves every ray one unit and
  reads the ids it lands on (one gather of B * K * n_rays values); the loop
  runs until the longest ray of the batch has ended, so its cost grows
  with the largest object, not the image. The training loss casts rays
  from a sample of the object pixels only (`sample_points`): casting them
  from every pixel of a batch of 256x256 crops measured seconds a step.
  """
  ids = jnp.asarray(ids).astype(jnp.int32)
  batch, height, width = ids.shape
  points = jnp.asarray(points).astype(jnp.int32)
  flat = ids.reshape(batch, -1)
  own = jnp.take_along_axis(flat, points[..., 0] * width + points[..., 1],
                            axis=1)
  dy, dx, correction = _steps(n_rays)
  dy, dx = jnp.asarray(dy), jnp.asarray(dx)
  inside = own > 0
  limit = height + width

  def cond(state):
    step, first = state
    return (step <= limit) & jnp.any(inside[..., None] & (first == 0))

  def body(state):
    step, first = state
    t = step.astype(jnp.float32)
    rows = points[..., :1] + jnp.round(t * dy).astype(jnp.int32)
    cols = points[..., 1:] + jnp.round(t * dx).astype(jnp.int32)
    out = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
    index = (jnp.clip(rows, 0, height - 1) * width
             + jnp.clip(cols, 0, width - 1)).reshape(batch, -1)
    seen = jnp.take_along_axis(flat, index, axis=1).reshape(rows.shape)
    hit = out | (seen != own[..., None])
    first = jnp.where((first == 0) & hit, step, first)
    return step + 1, first

  _, first = jax.lax.while_loop(
      cond, body,
      (jnp.int32(1), jnp.zeros(points.shape[:2] + (n_rays,), jnp.int32)))
  dist = first.astype(jnp.float32) + jnp.asarray(correction)
  return jnp.where(inside[..., None], dist, 0.0)


def sample_points(foreground: jax.Array, count: int
                  ) -> tuple[jax.Array, jax.Array]:
  """Up to `count` object pixels per image of `foreground` [B, H, W]:
  (points [B, count, 2] int32, used [B, count] float32, 1 = a real object
  pixel). All of them when an image has at most `count`; otherwise a
  spread-out subset, chosen by a fixed hash of the position in the crop
  (a golden-ratio low-discrepancy sequence), which picks other pixels of
  the image as the random crops move."""
  batch, height, width = foreground.shape
  rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width),
                            indexing="ij")
  spread = jnp.mod(rows * 0.6180339887 + cols * 0.7548776662
                   + rows * cols * 0.5698402910, 1.0)
  priority = jnp.where(foreground, 1.0 + spread, 0.0).reshape(batch, -1)
  count = min(count, height * width)
  score, index = jax.lax.top_k(priority, count)
  points = jnp.stack([index // width, index % width], axis=-1)
  return points.astype(jnp.int32), (score > 0).astype(jnp.float32)


def star_distances(instances: np.ndarray, n_rays: int = 32) -> np.ndarray:
  """Star distances [H, W, n_rays] of every pixel of one [H, W] instance
  map, as numpy (host, tests)."""
  instances = np.asarray(instances)
  if instances.ndim != 2:
    raise DataError(f"instance map: expected [H, W], got {instances.shape}")
  height, width = instances.shape
  points = np.argwhere(np.ones(instances.shape, bool)).astype(np.int32)
  dist = jax.jit(distances, static_argnums=2)(
      instances[None].astype(np.int32), points[None], check_n_rays(n_rays))
  return np.asarray(dist[0]).reshape(height, width, -1)


def polygons(dist: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Vertices [N, n_rays, 2] (row, col) of the polygons of `dist` [N, R]
  around `points` [N, 2] (StarDist's `dist_to_coord`)."""
  phi = ray_angles(dist.shape[1])
  return np.stack([points[:, :1] + dist * np.sin(phi),
                   points[:, 1:] + dist * np.cos(phi)], axis=-1)


def _rasterise(vertices: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
  """(rows, cols) of the pixels inside one polygon, clipped to `shape`."""
  return draw.polygon(vertices[:, 0], vertices[:, 1], shape)


_CELL = 32  # side of the grid cells that index kept polygons by position


def non_maximum_suppression(dist: np.ndarray, prob: np.ndarray,
                            points: np.ndarray, shape,
                            iou_threshold: float = 0.4) -> np.ndarray:
  """Indices of the kept candidates, highest probability first.

  Greedy, as StarDist's: the most probable candidate is kept, and every
  later one whose polygon overlaps a kept polygon with IoU above
  `iou_threshold` is dropped. IoU is counted on the rasterised polygons
  (pixels whose centres lie inside), inside the image. Kept polygons are
  indexed by the _CELL x _CELL cells their bounding boxes cover, so a
  candidate is compared only with the kept ones near it: the cost grows
  with the number of candidates, not with candidates x kept polygons.
  """
  if not 0 <= iou_threshold <= 1:
    raise ConfigError(f"task.nms_threshold={iou_threshold}: expected 0..1")
  order = np.argsort(-np.asarray(prob), kind="stable")
  vertices = polygons(np.asarray(dist, np.float32), np.asarray(points))
  cells: dict[tuple[int, int], list[int]] = {}
  kept, masks = [], []  # masks: (top, left, boolean mask of the pixels)
  for index in order:
    rows, cols = _rasterise(vertices[index], shape)
    if rows.size == 0:
      continue
    top, left = rows.min(), cols.min()
    bottom, right = rows.max(), cols.max()
    covered = [(i, j) for i in range(top // _CELL, bottom // _CELL + 1)
               for j in range(left // _CELL, right // _CELL + 1)]
    box = (int(top), int(left), int(bottom), int(right), int(rows.size))
    near = {k for cell in covered for k in cells.get(cell, ())}
    if any(_iou_above(rows, cols, box, masks[k], iou_threshold)
           for k in near):
      continue
    mask = np.zeros((bottom - top + 1, right - left + 1), bool)
    mask[rows - top, cols - left] = True
    for cell in covered:
      cells.setdefault(cell, []).append(len(kept))
    kept.append(index)
    masks.append((box, mask))
  return np.asarray(kept, np.int64)


def _iou_above(rows: np.ndarray, cols: np.ndarray, box, kept,
               threshold: float) -> bool:
  """Whether the pixels (rows, cols), within `box` (top, left, bottom,
  right, count), overlap a kept polygon with IoU above `threshold`. Bounds
  from the boxes alone answer most pairs without counting pixels."""
  (top, left, bottom, right, size), mask = kept
  height = min(bottom, box[2]) - max(top, box[0]) + 1
  width = min(right, box[3]) - max(left, box[1]) + 1
  if height <= 0 or width <= 0:
    return False
  most = min(height * width, size, box[4])  # the intersection's bound
  if most <= threshold * (size + box[4] - most):
    return False
  r, c = rows - top, cols - left
  inside = (r >= 0) & (r < mask.shape[0]) & (c >= 0) & (c < mask.shape[1])
  inter = np.count_nonzero(mask[r[inside], c[inside]])
  return inter > threshold * (size + box[4] - inter)


def polygons_to_label(dist: np.ndarray, prob: np.ndarray, points: np.ndarray,
                      shape) -> np.ndarray:
  """int32 [H, W] objects 1..N: polygon i is object i + 1, painted in
  order of rising probability, so where polygons overlap the more probable
  one wins (StarDist's `polygons_to_label`)."""
  labels = np.zeros(tuple(shape), np.int32)
  flat = labels.reshape(-1)
  vertices = polygons(np.asarray(dist, np.float32), np.asarray(points))
  for index in np.argsort(np.asarray(prob), kind="stable"):
    rows, cols = _rasterise(vertices[index], shape)
    flat[rows * shape[1] + cols] = index + 1
  return _renumber(labels)


def _renumber(labels: np.ndarray) -> np.ndarray:
  """Ids 1..n without gaps (an object painted over entirely disappears)."""
  present = np.unique(labels)
  present = present[present > 0]
  lookup = np.zeros(labels.max() + 1, np.int32)
  lookup[present] = np.arange(1, present.size + 1, dtype=np.int32)
  return lookup[labels]


def to_instances(prob: np.ndarray, dist: np.ndarray, *,
                 prob_threshold: float = 0.5, nms_threshold: float = 0.4,
                 stride: int = 2) -> np.ndarray:
  """Objects [H, W] from a probability map [H, W] and distances [H, W, R].

  Candidates are the pixels of a `stride` grid (StarDist's grid (2, 2)
  by default: a quarter of the pixels, each polygon still found many
  times over) whose probability exceeds `prob_threshold`; NMS keeps the
  best, and the kept polygons are painted.
  """
  prob, dist = np.asarray(prob, np.float32), np.asarray(dist, np.float32)
  if prob.ndim != 2 or dist.shape[:2] != prob.shape:
    raise DataError(f"star prediction: expected probability [H, W] and "
                    f"distances [H, W, R], got {prob.shape} and {dist.shape}")
  grid = np.zeros(prob.shape, bool)
  grid[::stride, ::stride] = True
  points = np.argwhere(grid & (prob > prob_threshold))
  if not len(points):
    return np.zeros(prob.shape, np.int32)
  cand_dist = np.maximum(dist[points[:, 0], points[:, 1]], 0.0)
  cand_prob = prob[points[:, 0], points[:, 1]]
  kept = non_maximum_suppression(cand_dist, cand_prob, points, prob.shape,
                                 iou_threshold=nms_threshold)
  return polygons_to_label(cand_dist[kept], cand_prob[kept], points[kept],
                           prob.shape)


def object_probability(instances: np.ndarray) -> np.ndarray:
  """StarDist's probability target (`edt_prob`): each object pixel's
  Euclidean distance to the nearest pixel outside its object, divided by
  the largest such distance in the object; 0 on the background. float32.
  As in StarDist, the image's edge is not a boundary (an object cut by it
  stays probable up to the edge)."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  instances = np.asarray(instances)
  prob = np.zeros(instances.shape, np.float32)
  for index, box in enumerate(ndimage.find_objects(instances)):
    if box is None:
      continue
    grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n))
                  for s, n in zip(box, instances.shape))
    inside = np.pad(instances[grown] == index + 1, 1, mode="edge")
    edt = ndimage.distance_transform_edt(inside)[1:-1, 1:-1]
    if edt.max() > 0:
      part = prob[grown]
      mine = instances[grown] == index + 1
      part[mine] = (edt / edt.max())[mine]
  return prob
