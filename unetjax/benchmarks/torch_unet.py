"""The PyTorch twin of the package's U-Net, for the training and predict
benchmarks: the spec a JAX run hands over, the network, and one fresh
process's training measurements. Only the benchmarks import torch."""
import time
from typing import Any

from unetjax.benchmarks.common import (
    median_seconds,
    peak_rss_bytes,
    torch_matmul_peak,
)


def torch_spec(config, experiment, shape) -> dict[str, Any] | None:
  """What the torch twin needs, or None for a model it does not mirror."""
  model = dict(config.model)
  plain = (model.get("name") == "unet" and isinstance(model.get("features"),
                                                      int)
           and all(model.get(k, d) == d for k, d in _TORCH_DEFAULTS.items()))
  if not plain:
    return None
  return dict(depth=model["depth"], features=model["features"],
              batchnorm=model.get("batchnorm", False),
              bn_momentum=model.get("bn_momentum", 0.9),
              in_channels=experiment.dataset.info.in_channels,
              num_outputs=experiment.task.num_outputs,
              input_shape=[int(s) for s in shape],
              learning_rate=config.optimizer.learning_rate,
              dtype=config.dtype,
              num_params=experiment.num_params)


# UNet options the torch twin implements only at these values.
_TORCH_DEFAULTS = dict(padding="SAME", kernel_size=3, convs_per_level=2,
                       activation="relu", dropout=0.0, skip=True,
                       upsampling="transpose", dilate=False)


def run_torch(spec: dict[str, Any], steps: int) -> dict[str, Any]:
  """The same U-Net, loss and optimizer in PyTorch, on random batches.

  On a GPU if torch sees one; bfloat16 compute through autocast when the
  JAX side computes in bfloat16.
  """
  import torch  # pylint: disable=g-import-not-at-top
  rss_at_start = peak_rss_bytes()
  started = time.perf_counter()
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    # As JAX on a GPU by default: TF32 in float32 matmuls and convolutions,
    # and the fastest convolution algorithms picked by trial.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
  autocast = torch.autocast(device, dtype=torch.bfloat16,
                            enabled=spec["dtype"] == "bfloat16")
  model = torch_unet(torch, spec).to(device)
  num_params = sum(p.numel() for p in model.parameters())
  optimizer = torch.optim.Adam(model.parameters(),
                               lr=spec["learning_rate"])
  loss_fn = torch.nn.BCEWithLogitsLoss()
  n, h, w, c = spec["input_shape"]
  images = torch.rand(n, c, h, w, device=device)
  labels = (torch.rand(n, spec["num_outputs"], h, w, device=device)
            > 0.5).float()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      logits = model(images)
    loss = loss_fn(logits.float(), labels)
    loss.backward()
    optimizer.step()
    return loss.item()

  model.train()
  step()
  first_step_s = time.perf_counter() - started
  step_s = median_seconds(step, steps)
  train_rss = peak_rss_bytes()
  peak = torch_matmul_peak(device, spec["dtype"])
  model.eval()
  with torch.no_grad(), autocast:
    predict_s = median_seconds(
        lambda: torch.sigmoid(model(images)).sum().item(), 3)
  return dict(framework="torch", torch_version=torch.__version__,
              device=device,
              torch_threads=torch.get_num_threads(), num_params=num_params,
              time_to_first_step_s=first_step_s, step_s=step_s,
              images_per_s=n / step_s, matmul_peak_gflops=peak,
              predict_images_per_s=n / predict_s,
              rss_at_start_bytes=rss_at_start, train_peak_rss_bytes=train_rss,
              peak_rss_bytes=peak_rss_bytes())


def torch_unet(torch, spec):
  """The torch twin of unetjax's UNet with SAME padding, as in the spec."""
  nn = torch.nn
  widths = [spec["features"] * 2 ** level for level in range(spec["depth"] + 1)]

  def block(cin, cout):
    layers = []
    for i in range(2):
      layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1,
                              bias=not spec["batchnorm"]))
      if spec["batchnorm"]:
        layers.append(nn.BatchNorm2d(cout, eps=1e-5,
                                     momentum=1 - spec["bn_momentum"]))
      layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)

  class UNet(nn.Module):
    """Encoder, bottleneck, decoder with concatenated skips, 1x1 head."""

    def __init__(self):
      super().__init__()
      cin = spec["in_channels"]
      self.down = nn.ModuleList()
      for width in widths[:-1]:
        self.down.append(block(cin, width))
        cin = width
      self.bottleneck = block(cin, widths[-1])
      self.up = nn.ModuleList()
      self.decode = nn.ModuleList()
      for level in reversed(range(spec["depth"])):
        self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level],
                                          2, stride=2))
        self.decode.append(block(2 * widths[level], widths[level]))
      self.head = nn.Conv2d(widths[0], spec["num_outputs"], 1)

    def forward(self, x):
      skips = []
      for down in self.down:
        x = down(x)
        skips.append(x)
        x = nn.functional.max_pool2d(x, 2)
      x = self.bottleneck(x)
      for up, decode, skip in zip(self.up, self.decode, reversed(skips)):
        x = decode(torch.cat([skip, up(x)], dim=1))
      return self.head(x)

  return UNet()
