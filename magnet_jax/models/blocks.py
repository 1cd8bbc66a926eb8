"""Residual blocks shared by the ResNet, HRNet and refinement models (NHWC).

Attribute names mirror the PyTorch blocks (torchvision / HRNet / the original's
`base.py`): `conv1, bn1, conv2, bn2[, conv3, bn3][, downsample.0, downsample.1]`,
so `load_state_dict` maps checkpoints onto them directly.
"""

from __future__ import annotations

import jax
from flax import nnx

from magnet_jax.models.layers import BatchNorm2d, Conv2d, conv_bn


def _needs_downsample(downsample: bool | None, inplanes: int, outplanes: int, stride: int) -> bool:
    if downsample is None:
        return stride != 1 or inplanes != outplanes
    return bool(downsample)


def make_downsample(inplanes: int, outplanes: int, *, stride: int, bn_momentum: float, rngs: nnx.Rngs) -> nnx.List:
    """`nn.Sequential(Conv2d 1x1 stride s no bias, BatchNorm2d)`: keys `downsample.0`, `downsample.1`."""
    return nnx.List(
        [
            Conv2d(inplanes, outplanes, 1, stride=stride, bias=False, rngs=rngs),
            BatchNorm2d(outplanes, momentum=bn_momentum),
        ]
    )


def _shortcut(
    downsample: bool | None,
    inplanes: int,
    outplanes: int,
    stride: int,
    bn_momentum: float,
    downsample_bn_momentum: float | None,
    rngs: nnx.Rngs,
) -> nnx.List | None:
    """A block's `downsample` shortcut (see `Bottleneck`), or None for the identity."""
    if not _needs_downsample(downsample, inplanes, outplanes, stride):
        return None
    ds_m = bn_momentum if downsample_bn_momentum is None else downsample_bn_momentum
    return make_downsample(inplanes, outplanes, stride=stride, bn_momentum=ds_m, rngs=rngs)


def _apply_downsample(downsample: nnx.List | None, x: jax.Array) -> jax.Array:
    if downsample is None:
        return x
    return conv_bn(downsample[0], downsample[1], x)


class Bottleneck(nnx.Module):
    """ResNet bottleneck (expansion 4): 1x1 -> BN -> ReLU -> 3x3/s -> BN -> ReLU -> 1x1 -> BN, + residual, ReLU.

    `[B, H, W, inplanes]` -> `[B, H/s, W/s, 4 * planes]`. No conv biases.
    `downsample`: None builds the 1x1 conv + BN shortcut exactly when the shape changes
    (stride != 1 or inplanes != 4 * planes); True / False force it on / off.
    `bn_momentum` (PyTorch convention) is used by bn1..bn3; the shortcut's BatchNorm uses
    `downsample_bn_momentum`, which defaults to `bn_momentum` (torchvision ResNet builds it
    with PyTorch's default 0.1 while the blocks use 0.01).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: bool | None = None,
        bn_momentum: float = 0.1,
        downsample_bn_momentum: float | None = None,
        rngs: nnx.Rngs,
    ):
        out = planes * self.expansion
        self.conv1 = Conv2d(inplanes, planes, 1, bias=False, rngs=rngs)
        self.bn1 = BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn2 = BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = Conv2d(planes, out, 1, bias=False, rngs=rngs)
        self.bn3 = BatchNorm2d(out, momentum=bn_momentum)
        self.downsample = _shortcut(downsample, inplanes, out, stride, bn_momentum, downsample_bn_momentum, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = conv_bn(self.conv1, self.bn1, x, act=True)
        out = conv_bn(self.conv2, self.bn2, out, act=True)
        return conv_bn(self.conv3, self.bn3, out, residual=_apply_downsample(self.downsample, x), act=True)


class BasicBlock(nnx.Module):
    """ResNet basic block (expansion 1): 3x3/s -> BN -> ReLU -> 3x3 -> BN, + residual, ReLU.

    `[B, H, W, inplanes]` -> `[B, H/s, W/s, planes]`. Same keyword arguments as `Bottleneck`.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: bool | None = None,
        bn_momentum: float = 0.1,
        downsample_bn_momentum: float | None = None,
        rngs: nnx.Rngs,
    ):
        out = planes * self.expansion
        self.conv1 = Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn1 = BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = BatchNorm2d(planes, momentum=bn_momentum)
        self.downsample = _shortcut(downsample, inplanes, out, stride, bn_momentum, downsample_bn_momentum, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = conv_bn(self.conv1, self.bn1, x, act=True)
        return conv_bn(self.conv2, self.bn2, out, residual=_apply_downsample(self.downsample, x), act=True)
