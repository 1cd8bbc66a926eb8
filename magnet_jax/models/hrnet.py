"""HRNet backbone of the original MagNet's HRNet+OCR models (NHWC).

Behaviour (MAGNET_SPEC section 1): stride-1 stem ("full output stride": branch 0 has the
input's resolution), `layer1` of Bottlenecks, stages 2/3/4 of `HighResolutionModule`s
whose fusion upsamples with bilinear(align_corners=True). Every BatchNorm here uses
PyTorch momentum 0.01 (`BN_MOMENTUM` of the original).

Attribute paths mirror the PyTorch keys (`stage3.1.fuse_layers.2.0.1.0`): `nn.Sequential`
and `nn.ModuleList` are `nnx.List`s; parameter-free entries (ReLU, the `None`s of
`fuse_layers` / `transition*`) keep their index so later indices match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
from flax import nnx

from magnet_jax.models.blocks import BasicBlock, Bottleneck
from magnet_jax.models.layers import BatchNorm2d, Conv2d, relu
from magnet_jax.ops.resize import resize_bilinear

BN_MOMENTUM = 0.01  # PyTorch convention (weight of the new batch), as the original's base.py
ALIGN_CORNERS = True


class ReLU(nnx.Module):
    """Parameter-free `nn.ReLU` entry of an `nn.Sequential` (keeps the indices after it)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return relu(x)


def run_sequential(layers: nnx.List, x: jax.Array) -> jax.Array:
    """Applies an `nnx.List` standing for an `nn.Sequential`, entry by entry (nested lists too)."""
    for layer in layers:
        x = run_sequential(layer, x) if isinstance(layer, nnx.List) else layer(x)
    return x


def conv_bn(cin: int, cout: int, kernel: int, *, stride: int = 1, with_relu: bool, rngs: nnx.Rngs) -> nnx.List:
    """`Sequential(Conv2d(k, stride, pad k//2, no bias), BatchNorm2d(momentum 0.01)[, ReLU])`."""
    layers = [
        Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False, rngs=rngs),
        BatchNorm2d(cout, momentum=BN_MOMENTUM),
    ]
    if with_relu:
        layers.append(ReLU())
    return nnx.List(layers)


@dataclass(frozen=True)
class StageConfig:
    num_modules: int
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)


@dataclass(frozen=True)
class HRNetConfig:
    """Stage 1 is `layer1` (Bottlenecks of `stem_planes` planes); stages 2-4 use BasicBlocks."""

    layer1_blocks: int
    stages: tuple[StageConfig, StageConfig, StageConfig]
    stem_planes: int = 64


# HRNet-W18-small-v2 (the original's SMALL_CONFIG_V2) and HRNet-W48 (LARGE_CONFIG).
HRNET_W18_SMALL_V2 = HRNetConfig(
    layer1_blocks=2,
    stages=(
        StageConfig(1, (2, 2), (18, 36)),
        StageConfig(3, (2, 2, 2), (18, 36, 72)),
        StageConfig(2, (2, 2, 2, 2), (18, 36, 72, 144)),
    ),
)
HRNET_W48 = HRNetConfig(
    layer1_blocks=4,
    stages=(
        StageConfig(1, (4, 4), (48, 96)),
        StageConfig(4, (4, 4, 4), (48, 96, 192)),
        StageConfig(3, (4, 4, 4, 4), (48, 96, 192, 384)),
    ),
)


class HighResolutionModule(nnx.Module):
    """One multi-resolution module: per-branch BasicBlocks, then all-to-all fusion.

    Call: list of `[B, H_i, W_i, C_i]` (branch i at 1/2^i of branch 0) -> same shapes.
    `fuse_layers[i][j]`: j > i: 1x1 conv + BN, then bilinear(ac=True) up to branch i;
    j < i: (i - j) 3x3/2 conv + BN (+ ReLU except the last); j == i: identity (`None`).
    """

    def __init__(self, num_blocks: Sequence[int], channels: Sequence[int], *, rngs: nnx.Rngs):
        n = len(channels)
        self.num_branches = n
        self.branches = nnx.List(
            [
                nnx.List([BasicBlock(c, c, bn_momentum=BN_MOMENTUM, rngs=rngs) for _ in range(num_blocks[b])])
                for b, c in enumerate(channels)
            ]
        )
        if n == 1:
            self.fuse_layers = None
            return
        fuse = []
        for i in range(n):
            row = []
            for j in range(n):
                if j > i:
                    row.append(conv_bn(channels[j], channels[i], 1, with_relu=False, rngs=rngs))
                elif j == i:
                    row.append(None)
                else:
                    chain = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = channels[i] if last else channels[j]
                        chain.append(conv_bn(channels[j], cout, 3, stride=2, with_relu=not last, rngs=rngs))
                    row.append(nnx.List(chain))
            fuse.append(nnx.List(row))
        self.fuse_layers = nnx.List(fuse)

    def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
        xs = [run_sequential(branch, x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for i, row in enumerate(self.fuse_layers):
            hw = xs[i].shape[1:3]
            y = xs[0] if i == 0 else run_sequential(row[0], xs[0])
            for j in range(1, self.num_branches):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + resize_bilinear(run_sequential(row[j], xs[j]), hw, ALIGN_CORNERS)
                else:
                    y = y + run_sequential(row[j], xs[j])
            fused.append(relu(y))
        return fused


def make_transition(pre: Sequence[int], cur: Sequence[int], *, rngs: nnx.Rngs) -> nnx.List:
    """`transition*`: adapt existing branches (3x3/1 conv + BN + ReLU, `None` when channels
    match) and create new ones from the last branch by 3x3/2 conv chains."""
    layers = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(None if c == pre[i] else conv_bn(pre[i], c, 3, with_relu=True, rngs=rngs))
        else:
            chain = []
            for j in range(i + 1 - len(pre)):
                cin = pre[-1]
                cout = c if j == i - len(pre) else cin
                chain.append(conv_bn(cin, cout, 3, stride=2, with_relu=True, rngs=rngs))
            layers.append(nnx.List(chain))
    return nnx.List(layers)


class HighResolutionNet(nnx.Module):
    """HRNet feature extractor: `[B, H, W, 3]` -> 4 branches `[B, H/2^i, W/2^i, C_i]`.

    Keys: `conv1, bn1, conv2, bn2, layer1.*, transition{1,2,3}.*, stage{2,3,4}.*`.
    """

    def __init__(self, config: HRNetConfig, *, rngs: nnx.Rngs):
        planes = config.stem_planes
        self.conv1 = Conv2d(3, planes, 3, stride=1, padding=1, bias=False, rngs=rngs)
        self.bn1 = BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, bias=False, rngs=rngs)
        self.bn2 = BatchNorm2d(planes, momentum=BN_MOMENTUM)
        layer1 = []
        inplanes = planes
        for _ in range(config.layer1_blocks):
            layer1.append(Bottleneck(inplanes, planes, bn_momentum=BN_MOMENTUM, rngs=rngs))
            inplanes = planes * Bottleneck.expansion
        self.layer1 = nnx.List(layer1)

        pre = [inplanes]
        s2, s3, s4 = config.stages
        self.transition1 = make_transition(pre, s2.num_channels, rngs=rngs)
        self.stage2 = self._make_stage(s2, rngs=rngs)
        self.transition2 = make_transition(s2.num_channels, s3.num_channels, rngs=rngs)
        self.stage3 = self._make_stage(s3, rngs=rngs)
        self.transition3 = make_transition(s3.num_channels, s4.num_channels, rngs=rngs)
        self.stage4 = self._make_stage(s4, rngs=rngs)
        self.out_channels: tuple[int, ...] = tuple(s4.num_channels)

    @staticmethod
    def _make_stage(cfg: StageConfig, *, rngs: nnx.Rngs) -> nnx.List:
        return nnx.List(
            [HighResolutionModule(cfg.num_blocks, cfg.num_channels, rngs=rngs) for _ in range(cfg.num_modules)]
        )

    @staticmethod
    def _transition(transition: nnx.List, ys: list[jax.Array]) -> list[jax.Array]:
        xs = []
        for i, layer in enumerate(transition):
            if layer is None:
                xs.append(ys[i])
            else:
                xs.append(run_sequential(layer, ys[i] if i < len(ys) else ys[-1]))
        return xs

    @staticmethod
    def _stage(stage: nnx.List, xs: list[jax.Array]) -> list[jax.Array]:
        for module in stage:
            xs = module(xs)
        return xs

    def features(self, x: jax.Array) -> list[jax.Array]:
        """`[B, H, W, 3]` -> `[x0 [B, H, W, C0], x1 [B, H/2, W/2, C1], x2, x3]` (sizes rounded up)."""
        x = relu(self.bn1(self.conv1(x)))
        x = relu(self.bn2(self.conv2(x)))
        x = run_sequential(self.layer1, x)
        ys = self._stage(self.stage2, self._transition(self.transition1, [x]))
        ys = self._stage(self.stage3, self._transition(self.transition2, ys))
        return self._stage(self.stage4, self._transition(self.transition3, ys))
