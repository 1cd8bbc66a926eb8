"""The original's Cityscapes backbone (HRNet-W18-small-v2 + OCR, "hrnet18+ocr") re-expressed in PyTorch.

Used by `benchmarks/vs_torch.py` only, like `torch_reference.py` (whose Bottleneck and BatchNorm it
reuses): written from `MAGNET_SPEC.md` section 1, attribute names from the state-dict keys of
`parity/manifests/hrnet18_ocr_19.json` (`load_state_dict(strict=True)` checks the layout), outputs
checked against the original's module fixture before timing. NCHW; eval only (Dropout2d is a no-op).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_reference import Bottleneck, _bn

# HRNet-W18-small-v2: branch channels and modules of stages 2/3/4 (2 BasicBlocks per branch).
STAGES = (((18, 36), 1), ((18, 36, 72), 3), ((18, 36, 72, 144), 2))
OCR_MID, OCR_KEY = 512, 256


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), _bn(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = _bn(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = _bn(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + x)


class HRModule(nn.Module):
    """Branches of 2 BasicBlocks, then each output the ReLU'd sum of every branch brought to its size."""

    def __init__(self, channels):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(BasicBlock(c), BasicBlock(c)) for c in channels)
        rows = []
        for i, ci in enumerate(channels):
            row = []
            for j, cj in enumerate(channels):
                if j == i:
                    row.append(None)
                elif j > i:  # from a lower resolution: 1x1 + BN, then bilinear(ac=True) in forward
                    row.append(_conv_bn(cj, ci, 1, relu=False))
                else:  # from a higher resolution: i - j convs 3x3/2 (+ ReLU except the last)
                    chain = [_conv_bn(cj, cj, 3, 2) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*chain, _conv_bn(cj, ci, 3, 2, relu=False)))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j > i:
                    y = y + _up(layer(xs[j]), xs[i].shape[2:])
                elif j < i:
                    y = y + layer(xs[j])
            out.append(F.relu(y))
        return out


def _transition(pre, cur) -> nn.ModuleList:
    """Existing branches kept (None: same channels); the new one from the last by a 3x3/2 conv + BN + ReLU."""
    layers: list[nn.Module | None] = [None] * len(cur)
    layers[-1] = nn.Sequential(_conv_bn(pre[-1], cur[-1], 3, 2))
    if len(pre) == 1:  # transition1: branch 0 is a 3x3/1 conv from layer1's 256 channels
        layers[0] = _conv_bn(pre[0], cur[0], 3)
    return nn.ModuleList(layers)


class HRNet18OCR(nn.Module):
    """`[B, 3, H, W]` -> logits `[B, n, H, W]`: `(out + 0.4 aux) / 1.4`, bilinear(ac=True) to the input."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = _bn(64)
        self.layer1 = nn.Sequential(Bottleneck(64, 64), Bottleneck(256, 64))
        pre = (256,)
        for k, (channels, modules) in enumerate(STAGES, start=1):
            setattr(self, f"transition{k}", _transition(pre, channels))
            setattr(self, f"stage{k + 1}", nn.Sequential(*(HRModule(channels) for _ in range(modules))))
            pre = channels
        width = sum(pre)
        self.aux_head = nn.Sequential(
            nn.Conv2d(width, width, 1), _bn(width), nn.ReLU(), nn.Conv2d(width, num_classes, 1)
        )
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(width, OCR_MID, 3, padding=1), _bn(OCR_MID), nn.ReLU())
        self.ocr_distri_head = SpatialOCR(OCR_MID, OCR_KEY)
        self.cls_head = nn.Conv2d(OCR_MID, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        y = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        xs = [self.layer1(y)]
        for k in (1, 2, 3):
            transition = getattr(self, f"transition{k}")
            xs = [xs[i] if t is None else t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)]
            for module in getattr(self, f"stage{k + 1}"):
                xs = module(xs)
        feats = torch.cat([xs[0]] + [_up(b, xs[0].shape[2:]) for b in xs[1:]], dim=1)
        aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        weights = torch.softmax(aux.flatten(2), dim=2)  # [B, n, HW]: softmax over pixels
        proxy = torch.bmm(weights, feats.flatten(2).transpose(1, 2))  # [B, n, C] class centres
        out = self.cls_head(self.ocr_distri_head(feats, proxy.transpose(1, 2).unsqueeze(3)))
        return _up((out + 0.4 * aux) / 1.4, size)


def _conv1x1_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    """A 1x1 conv, then BN + ReLU as one child: the state-dict keys `<i>.weight`, `<i+1>.0.*`."""
    return [nn.Conv2d(cin, cout, 1, bias=False), nn.Sequential(_bn(cout), nn.ReLU())]


class ObjectAttention(nn.Module):
    def __init__(self, channels: int, key: int):
        super().__init__()
        self.key = key
        self.f_pixel = nn.Sequential(*_conv1x1_bn_relu(channels, key), *_conv1x1_bn_relu(key, key))
        self.f_object = nn.Sequential(*_conv1x1_bn_relu(channels, key), *_conv1x1_bn_relu(key, key))
        self.f_down = nn.Sequential(*_conv1x1_bn_relu(channels, key))
        self.f_up = nn.Sequential(*_conv1x1_bn_relu(key, channels))

    def forward(self, x: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query = self.f_pixel(x).flatten(2).transpose(1, 2)  # [B, HW, key]
        keys = self.f_object(proxy).flatten(2)  # [B, key, n]
        value = self.f_down(proxy).flatten(2).transpose(1, 2)  # [B, n, key]
        sim = torch.softmax(torch.bmm(query, keys) * self.key**-0.5, dim=-1)
        context = torch.bmm(sim, value).transpose(1, 2).reshape(b, self.key, h, w)
        return self.f_up(context)


class SpatialOCR(nn.Module):
    def __init__(self, channels: int, key: int):
        super().__init__()
        self.object_context_block = ObjectAttention(channels, key)
        self.conv_bn_dropout = nn.Sequential(*_conv1x1_bn_relu(2 * channels, channels))

    def forward(self, feats: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        context = self.object_context_block(feats, proxy)
        return self.conv_bn_dropout(torch.cat([context, feats], dim=1))
