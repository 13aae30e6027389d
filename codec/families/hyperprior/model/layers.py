"""Building blocks of the transforms: convolutions, (inverse) simplified GDN and the two-path transform.

Simplified GDN (Johnston et al. 2019) normalises each channel by a learned
weighted sum of absolute activations: ``y = x / (beta + gamma * |x|)``. It is
cheaper than the square-root GDN and works as well for small models.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LowerBound(torch.autograd.Function):
    """``max(x, bound)`` whose gradient still pushes values back up from below the bound."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes, None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    return LowerBound.apply(x, bound)


class SimplifiedGDN(nn.Module):
    """Per-pixel divisive normalisation; ``inverse=True`` multiplies instead (IGDN)."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta_raw = nn.Parameter(torch.ones(channels))
        self.gamma_raw = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = lower_bound(self.beta_raw, 1e-4)
        gamma = lower_bound(self.gamma_raw, 0.0)
        norm = F.conv2d(x.abs(), gamma.to(x.dtype), beta.to(x.dtype))
        if torch.is_grad_enabled():
            return x * norm if self.inverse else x / norm
        return norm.mul_(x) if self.inverse else torch.div(x, norm, out=norm)  # coding: no new activation


class TwoPath(nn.Module):
    """A linear block transform plus a convolutional refinement: ``linear(x) + nonlinear(x)``.

    The linear path (16×16 blocks) starts as a PCA of training patches and the
    nonlinear path's last layer starts at zero, so the model begins as a good
    block transform and learns its non-linear, overlapping refinement from there:
    this makes short (CPU) training runs converge far faster than from scratch.
    """

    def __init__(self, linear: nn.Module, nonlinear: nn.Sequential):
        super().__init__()
        self.linear = linear
        self.nonlinear = nonlinear
        nn.init.zeros_(nonlinear[-1].weight)
        nn.init.zeros_(nonlinear[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear(x) + self.nonlinear(x)

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        """The linear path. A transposed convolution over whole blocks (stride = kernel, the synthesis')
        runs, when coding, as the same sums in a 1×1 convolution and a pixel shuffle: several times
        faster on CPU, and the same bits."""
        lin = self.linear
        if (torch.is_grad_enabled() or not isinstance(lin, nn.ConvTranspose2d)
                or lin.stride != lin.kernel_size or lin.padding != (0, 0) or lin.kernel_size[0] != lin.kernel_size[1]):
            return lin(x)
        k = lin.kernel_size[0]
        weight = lin.weight.reshape(lin.in_channels, -1).t().reshape(-1, lin.in_channels, 1, 1)
        return F.pixel_shuffle(F.conv2d(x, weight, lin.bias.repeat_interleave(k * k)), k)


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a transform computes in (an engine may run it in float16)."""
    return next(module.parameters()).dtype
