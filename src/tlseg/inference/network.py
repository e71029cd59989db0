"""The network: a small U-Net sized for a 2-core CPU.

It maps one normalised gray image at the canonical cell scale to three maps:

- channel 0: foreground logit (cell vs. background);
- channel 1: logit of the *normalised distance* — for each cell pixel, its distance to
  the cell's border divided by the largest such distance in that cell (1 at the cell
  centre, 0 at the border and in the background). Seeds that split touching cells come
  from thresholding it (see :mod:`tlseg.inference.postprocess`);
- channel 2: log2 of the apparent cell diameter over the canonical diameter, used to
  estimate the cell size of an image automatically (see :mod:`tlseg.inference.model`);
- channels 3-4 (models with flows): the flow towards each cell's centre, y and x (see
  :mod:`tlseg.training.targets`); following it groups the pixels of each cell into one sink.

A stride-2 stem runs the U-Net at half resolution (as StarDist's ``grid=(2, 2)``) and
the outputs are upsampled bilinearly: at the canonical scale a cell is still ~15 pixels
across inside the network, and inference costs a quarter of a full-resolution U-Net.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_OUTPUTS = 3  # fg, dist, logsize; + flow_y, flow_x with flows


class _ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with a stride-2 stem and one level per entry of ``channels``.

    Parameters
    ----------
    channels : tuple of int
        Feature channels per level, from half resolution down.
    n_outputs : int
        Output maps: 3, or 5 with flows.

    Examples
    --------
    >>> net = UNet(channels=(8, 16))
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(self, channels: tuple[int, ...] = (32, 48, 64, 96, 128),
                 n_outputs: int = N_OUTPUTS):
        super().__init__()
        chans = list(channels)
        self.stem = nn.Sequential(
            nn.Conv2d(1, chans[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(inplace=True),
        )
        self.down = nn.ModuleList(
            [_ConvBlock(chans[0], chans[0])]
            + [_ConvBlock(a, b) for a, b in zip(chans[:-1], chans[1:])]
        )
        self.up = nn.ModuleList(
            nn.Conv2d(b, a, 1) for a, b in zip(reversed(chans[:-1]), reversed(chans[1:]))
        )
        self.fuse = nn.ModuleList(_ConvBlock(2 * a, a) for a in reversed(chans[:-1]))
        self.head = nn.Conv2d(chans[0], n_outputs, 1)
        self.stride = 2 ** len(chans)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, one per level, finest first (the last, at
        1/``stride`` of the input, describes what the network sees in a region)."""
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        x = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            x = up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            x = fuse(torch.cat([x, skips.pop()], dim=1))
        return F.interpolate(self.head(x), scale_factor=2.0, mode="bilinear", align_corners=False)
