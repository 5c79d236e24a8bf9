"""A trained U-Net or FCN-32 as an ONNX graph, built from the model's own
structure.

Why by hand, with the `onnx` package, and not with a converter: `jax2onnx`
is the converter for Flax NNX, but its current release (0.17.1) pins
`orbax-checkpoint<0.11.37` and cannot be installed beside this package's
`orbax-checkpoint>=0.12.8`. The newest release that installs beside it
(0.13.0, tried 2026-12-07 with jax 0.10.2 / flax 0.12.8) fails inside
`jax.interpreters.batching` on this JAX and, for our max pooling, writes a
`ReduceMax` with its axes as an input, which opset 17 (what deepImageJ/JDLL's
onnxruntime runs) does not allow: onnxruntime refuses the graph. Running
a converter in its own environment is no option for a user who types
`unetjax-export`. A U-Net or FCN-32 in inference mode is a few op kinds
(Conv, BatchNormalization, an activation, MaxPool, ConvTranspose or
Resize, Concat, Add, Slice for VALID crops, Sigmoid/Softmax), so the graph
is written here from the module tree; tests compare onnxruntime's output
with the JAX forward pass on several image sizes.

The graph takes NCHW float32 images (`input`: batch, channels, height,
width, all free; height and width multiples of 2**depth, 32 for FCN-32)
and returns the task's probabilities NCHW (`output`): a sigmoid for
one-output tasks, a softmax over the classes otherwise.
"""
import jax
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from unetjax.models import layers
from unetjax.models.fcn import FCN32, STRIDE
from unetjax.models.unet import UNet
from unetjax.runtime.errors import ConfigError

OPSET = 17
INPUT, OUTPUT = "input", "output"

# jax.nn activation -> (ONNX op, attributes); silu/swish are x * sigmoid(x).
_ACTIVATIONS = {
    "relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
    "elu": ("Elu", {"alpha": 1.0}), "selu": ("Selu", {}),
    "celu": ("Celu", {"alpha": 1.0}), "softplus": ("Softplus", {}),
    "leaky_relu": ("LeakyRelu", {"alpha": 0.01}),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),
    "silu": ("Silu", {}), "swish": ("Silu", {}),
    "relu6": ("Clip", {"min": 0.0, "max": 6.0}),
    "hard_tanh": ("Clip", {"min": -1.0, "max": 1.0}),
}


def activation_name(function) -> str:
  """The registered name of a model's activation function."""
  for name in layers.ACTIVATIONS:
    if getattr(jax.nn, name) is function:
      return name
  return getattr(function, "__name__", repr(function))


def check_exportable(model, head: str) -> None:
  """One line naming what this exporter cannot write, before any work."""
  if isinstance(model, FCN32):
    names = set()
  elif isinstance(model, UNet):
    names = {activation_name(b.activation)
             for b in [*model.down, model.bottleneck, *model.decode]}
  else:
    raise ConfigError(f"model {type(model).__name__} cannot be exported: the "
                      "ONNX exporter writes U-Nets (model.name='unet', "
                      "dilated or not) and FCN-32 (model.name='fcn32') only")
  unknown = sorted(names - set(_ACTIVATIONS))
  if unknown:
    raise ConfigError(f"model.activation={unknown[0]!r} has no ONNX "
                      f"operator here; exportable: {sorted(_ACTIVATIONS)}")
  if head not in ("sigmoid", "softmax"):
    raise ConfigError(f"output head {head!r}: expected sigmoid or softmax")


class _Graph:
  """Nodes and initializers, with fresh names."""

  def __init__(self):
    self.nodes, self.weights = [], []
    self._count = 0

  def name(self, prefix: str) -> str:
    self._count += 1
    return f"{prefix}_{self._count}"

  def const(self, prefix: str, value: np.ndarray) -> str:
    name = self.name(prefix)
    self.weights.append(numpy_helper.from_array(np.ascontiguousarray(value),
                                                name))
    return name

  def op(self, op_type: str, inputs: list[str], prefix: str | None = None,
         **attributes) -> str:
    out = self.name(prefix or op_type.lower())
    self.nodes.append(helper.make_node(op_type, inputs, [out], **attributes))
    return out


def _array(param) -> np.ndarray:
  return np.asarray(param[...], np.float32)


def _conv(g: _Graph, x: str, conv) -> str:
  """nnx.Conv (kernel [kh, kw, in, out]) as ONNX Conv (weights OIHW)."""
  kernel = _array(conv.kernel).transpose(3, 2, 0, 1)
  kh, kw = kernel.shape[2:]
  dilation = conv.kernel_dilation
  dilation = (dilation,) * 2 if isinstance(dilation, int) else tuple(
      dilation or (1, 1))
  strides = conv.strides
  strides = [strides] * 2 if isinstance(strides, int) else list(
      strides or (1, 1))
  if isinstance(conv.padding, int):  # torch-style, as the ResNet's
    pads = [conv.padding] * 4
  elif conv.padding == "SAME" and strides == [1, 1]:
    pads = [dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2] * 2
  elif conv.padding == "VALID" or (conv.padding == "SAME" and kh == kw == 1):
    pads = [0, 0, 0, 0]  # a strided 1x1 SAME conv pads nothing
  else:
    raise ConfigError(f"convolution padding {conv.padding!r} with strides "
                      f"{strides}: not one the ONNX exporter writes")
  inputs = [x, g.const("conv_w", kernel)]
  if conv.bias is not None:
    inputs.append(g.const("conv_b", _array(conv.bias)))
  return g.op("Conv", inputs, kernel_shape=[kh, kw], pads=pads,
              dilations=list(dilation), strides=strides)


def _batchnorm(g: _Graph, x: str, norm) -> str:
  """The running statistics, as ONNX's inference-mode BatchNormalization."""
  return g.op("BatchNormalization", [
      x, g.const("bn_scale", _array(norm.scale)),
      g.const("bn_bias", _array(norm.bias)),
      g.const("bn_mean", _array(norm.mean)),
      g.const("bn_var", _array(norm.var))], epsilon=float(norm.epsilon))


def _activation(g: _Graph, x: str, function) -> str:
  op_type, attributes = _ACTIVATIONS[activation_name(function)]
  if op_type == "Silu":
    return g.op("Mul", [x, g.op("Sigmoid", [x])], prefix="silu")
  if op_type == "Clip":  # opset >= 11: the bounds are inputs
    low = g.const("clip_min", np.float32(attributes["min"]))
    high = g.const("clip_max", np.float32(attributes["max"]))
    return g.op("Clip", [x, low, high])
  return g.op(op_type, [x], **attributes)


def _block_outputs(g: _Graph, x: str, block) -> list[str]:
  """Every conv layer's output of a ConvBlock (dropout is off at inference)."""
  outputs = []
  for i, conv in enumerate(block.convs):
    x = _conv(g, x, conv)
    if block.norms:
      x = _batchnorm(g, x, block.norms[i])
    x = _activation(g, x, block.activation)
    outputs.append(x)
  return outputs


def _upsample(g: _Graph, x: str, up) -> str:
  if up.kind == "transpose":
    # UpConv2x2: y[2h+i, 2w+j, o] = sum_c x[h, w, c] k[i, j, c, o] + b, which
    # is ConvTranspose (kernel 2, stride 2) with weights [c, o, i, j].
    kernel = _array(up.layer.kernel).transpose(2, 3, 0, 1)
    return g.op("ConvTranspose", [x, g.const("up_w", kernel),
                                  g.const("up_b", _array(up.layer.bias))],
                kernel_shape=[2, 2], strides=[2, 2])
  # jax.image.resize 'bilinear' doubling: half-pixel centres, edges clamped.
  scales = g.const("scales", np.array([1, 1, 2, 2], np.float32))
  x = g.op("Resize", [x, "", scales], mode="linear",
           coordinate_transformation_mode="half_pixel")
  return _conv(g, x, up.layer)


def _center_crop(g: _Graph, skip: str, like: str) -> str:
  """The central window of `skip` the size of `like` (VALID U-Nets)."""
  def hw(name):
    return g.op("Slice", [g.op("Shape", [name]),
                          g.const("i", np.array([2], np.int64)),
                          g.const("i", np.array([4], np.int64))])
  start = g.op("Div", [g.op("Sub", [hw(skip), hw(like)]),
                       g.const("two", np.array([2, 2], np.int64))])
  end = g.op("Add", [start, hw(like)])
  return g.op("Slice", [skip, start, end,
                        g.const("axes", np.array([2, 3], np.int64))])


def unet_graph(model: UNet, head: str, *, in_channels: int,
               name: str = "unetjax") -> onnx.ModelProto:
  """The inference-mode ONNX model of a U-Net and its output head."""
  check_exportable(model, head)
  g = _Graph()
  x, skips = INPUT, []
  for block in model.down:
    x = _block_outputs(g, x, block)[-1]
    skips.append(x)
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
  outputs = _block_outputs(g, x, model.bottleneck)
  x = outputs[-1]
  if model.dilate and model.addition:
    x = outputs[0]
    for other in outputs[1:]:
      x = g.op("Add", [x, other])
  for up, block, skip in zip(model.up, model.decode, reversed(skips)):
    x = _upsample(g, x, up)
    if model.skip:
      if model.padding != "SAME":
        skip = _center_crop(g, skip, x)
      x = g.op("Concat", [skip, x], axis=1)
    x = _block_outputs(g, x, block)[-1]
  head_w = _array(model.head.kernel).T[:, :, None, None]
  logits = g.op("Conv", [x, g.const("head_w", head_w),
                         g.const("head_b", _array(model.head.bias))],
                kernel_shape=[1, 1])
  return _finish(g, logits, head_w.shape[0], head, in_channels, name)


def fcn_graph(model: FCN32, head: str, *, in_channels: int,
              name: str = "unetjax") -> onnx.ModelProto:
  """The inference-mode ONNX model of an FCN-32 and its output head."""
  check_exportable(model, head)
  g, net = _Graph(), model.backbone
  x = g.op("Relu", [_batchnorm(g, _conv(g, INPUT, net.stem), net.stem_norm)])
  x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1])
  for block in net.blocks:
    y = g.op("Relu", [_batchnorm(g, _conv(g, x, block.conv1), block.norm1)])
    y = _batchnorm(g, _conv(g, y, block.conv2), block.norm2)
    if block.shortcut is not None:
      x = _batchnorm(g, _conv(g, x, block.shortcut), block.shortcut_norm)
    x = g.op("Relu", [g.op("Add", [x, y])])
  logits = _conv(g, x, model.classifier)
  if model.upsample is not None:
    # StridedUpsample: each pixel adds kernel[k] at output m*f + k (no
    # flip), cropped by f/2 on each side: ConvTranspose with pads f/2.
    f = model.upsample.factor
    kernel = _array(model.upsample.kernel).transpose(2, 3, 0, 1)
    logits = g.op("ConvTranspose", [logits, g.const("up_w", kernel)],
                  kernel_shape=[2 * f, 2 * f], strides=[f, f],
                  pads=[f // 2] * 4)
  else:
    scales = g.const("scales", np.array([1, 1, STRIDE, STRIDE], np.float32))
    logits = g.op("Resize", [logits, "", scales], mode="linear",
                  coordinate_transformation_mode="half_pixel")
  num_outputs = int(model.classifier.kernel[...].shape[-1])
  return _finish(g, logits, num_outputs, head, in_channels, name)


def model_graph(model, head: str, *, in_channels: int) -> onnx.ModelProto:
  """The ONNX model of any exportable model."""
  if isinstance(model, FCN32):
    return fcn_graph(model, head, in_channels=in_channels)
  check_exportable(model, head)
  return unet_graph(model, head, in_channels=in_channels)


def _finish(g: _Graph, logits: str, num_outputs: int, head: str,
            in_channels: int, name: str) -> onnx.ModelProto:
  """The output head on the logits, then the checked model."""
  final = "Sigmoid" if head == "sigmoid" else "Softmax"
  g.nodes.append(helper.make_node(final, [logits], [OUTPUT],
                                  **({"axis": 1} if final == "Softmax"
                                     else {})))
  graph = helper.make_graph(
      g.nodes, name,
      [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT,
                                     ["batch", in_channels, "height",
                                      "width"])],
      [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                     ["batch", num_outputs, "out_height",
                                      "out_width"])],
      initializer=g.weights)
  proto = helper.make_model(graph, producer_name="unetjax",
                            opset_imports=[helper.make_opsetid("", OPSET)])
  proto.ir_version = 8  # what onnxruntime >= 1.13 (JDLL's) reads
  onnx.checker.check_model(proto, full_check=True)
  return proto
