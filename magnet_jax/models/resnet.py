"""ResNet backbones (NHWC) returning the feature maps c2..c5.

Same structure and state-dict keys as torchvision's / the original MagNet's ResNet:
`conv1, bn1, layer1.0.conv1, ..., layer4.2.downsample.1`. The stem and shortcut
BatchNorms use PyTorch's default momentum 0.1, the blocks' own BatchNorms 0.01
(the original's `BN_MOMENTUM`). No classification head.
"""

from __future__ import annotations

import jax
from flax import nnx

from magnet_jax.models.blocks import BasicBlock, Bottleneck
from magnet_jax.models.layers import BatchNorm2d, Conv2d, conv_bn, max_pool_3x3_s2

BLOCK_BN_MOMENTUM = 0.01
DEFAULT_BN_MOMENTUM = 0.1

# depth -> (block, blocks per stage)
RESNET_LAYOUTS: dict[int, tuple[type, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nnx.Module):
    """ResNet trunk: conv 7x7/2 -> BN -> ReLU -> maxpool 3/2 -> layer1..layer4.

    Call: `[B, H, W, in_channels]` -> `(c2, c3, c4, c5)` at strides 4, 8, 16, 32 with
    64/128/256/512 x `block.expansion` channels.
    """

    def __init__(self, depth: int = 50, *, in_channels: int = 3, rngs: nnx.Rngs):
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(RESNET_LAYOUTS)}")
        block, counts = RESNET_LAYOUTS[depth]
        self.depth = depth
        self.out_channels = tuple(p * block.expansion for p in (64, 128, 256, 512))
        self.conv1 = Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, rngs=rngs)
        self.bn1 = BatchNorm2d(64, momentum=DEFAULT_BN_MOMENTUM)
        inplanes = 64
        self.layer1, inplanes = self._make_layer(block, inplanes, 64, counts[0], 1, rngs)
        self.layer2, inplanes = self._make_layer(block, inplanes, 128, counts[1], 2, rngs)
        self.layer3, inplanes = self._make_layer(block, inplanes, 256, counts[2], 2, rngs)
        self.layer4, inplanes = self._make_layer(block, inplanes, 512, counts[3], 2, rngs)

    @staticmethod
    def _make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int, rngs: nnx.Rngs):
        layers = [
            block(
                inplanes,
                planes,
                stride=stride,
                bn_momentum=BLOCK_BN_MOMENTUM,
                downsample_bn_momentum=DEFAULT_BN_MOMENTUM,
                rngs=rngs,
            )
        ]
        inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(inplanes, planes, bn_momentum=BLOCK_BN_MOMENTUM, rngs=rngs))
        return nnx.List(layers), inplanes

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        x = max_pool_3x3_s2(conv_bn(self.conv1, self.bn1, x, act=True))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
            feats.append(x)
        return tuple(feats)


def resnet18(*, rngs: nnx.Rngs, in_channels: int = 3) -> ResNet:
    return ResNet(18, in_channels=in_channels, rngs=rngs)


def resnet34(*, rngs: nnx.Rngs, in_channels: int = 3) -> ResNet:
    return ResNet(34, in_channels=in_channels, rngs=rngs)


def resnet50(*, rngs: nnx.Rngs, in_channels: int = 3) -> ResNet:
    return ResNet(50, in_channels=in_channels, rngs=rngs)


def resnet101(*, rngs: nnx.Rngs, in_channels: int = 3) -> ResNet:
    return ResNet(101, in_channels=in_channels, rngs=rngs)
