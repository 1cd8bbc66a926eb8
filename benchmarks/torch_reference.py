"""The original's DeepGlobe models (ResNet-50 FPN, refinement module) re-expressed in PyTorch.

Used by `benchmarks/vs_torch.py` only, to time the original's framework on the same CPU as
magnet-jax. Written from the architecture in `MAGNET_SPEC.md` section 1 (not from the original's
code); attribute names follow the state-dict keys of `parity/manifests/{fpn_7,refine_7}.json`, so
`load_state_dict(strict=True)` checks the layout and `check_against_fixtures` checks the outputs
against the original's module fixtures. Not part of the library: torch is imported here only.
NCHW, as PyTorch has it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RESNET50_BLOCKS = (3, 4, 6, 3)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5)


class Bottleneck(nn.Module):
    """1x1 -> BN -> ReLU -> 3x3/s -> BN -> ReLU -> 1x1 -> BN, + shortcut, ReLU (expansion 4)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = _bn(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), _bn(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """conv 7x7/2 -> BN -> ReLU -> maxpool 3/2 -> layer1..4; returns c2..c5."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(64)
        inplanes, layers = 64, []
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), RESNET50_BLOCKS, strict=True)):
            blocks = [Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * 4
            blocks += [Bottleneck(inplanes, planes) for _ in range(count - 1)]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return tuple(feats)


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ResnetFPN(nn.Module):
    """`[B, 3, H, W]` -> logits `[B, n, H, W]` (spec: ResnetFPN)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.resnet_backbone = ResNet50()
        self.toplayer = nn.Conv2d(2048, 256, 1)
        self.latlayer1 = nn.Conv2d(1024, 256, 1)
        self.latlayer2 = nn.Conv2d(512, 256, 1)
        self.latlayer3 = nn.Conv2d(256, 256, 1)
        for level in range(1, 5):
            setattr(self, f"smooth{level}_1", nn.Conv2d(256, 256, 3, padding=1))
            setattr(self, f"smooth{level}_2", nn.Conv2d(256, 128, 3, padding=1))
        self.classify = nn.Conv2d(512, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c2, c3, c4, c5 = self.resnet_backbone(x)
        p5 = self.toplayer(c5)
        p4 = _up(p5, c4.shape[2:]) + self.latlayer1(c4)
        p3 = _up(p4, c3.shape[2:]) + self.latlayer2(c3)
        p2 = _up(p3, c2.shape[2:]) + self.latlayer3(c2)
        levels = [
            getattr(self, f"smooth{i}_2")(getattr(self, f"smooth{i}_1")(p)) for i, p in enumerate((p5, p4, p3, p2), 1)
        ]
        size = levels[-1].shape[2:]
        feats = torch.cat([_up(p, size) for p in levels[:3]] + [levels[3]], dim=1)
        return _up(self.classify(feats), x.shape[2:])


class RefinementMagNet(nn.Module):
    """`(first, second)` probabilities `[B, n, H, W]` -> logits `[B, n, H, W]` (spec: RefinementMagNet)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.bn0 = _bn(2 * num_classes)
        self.conv1 = nn.Conv2d(2 * num_classes, 64, 3, padding=1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = _bn(64)
        self.residual = nn.Sequential(Bottleneck(64, 32), Bottleneck(128, 32))
        self.seg_conv = nn.Conv2d(128, num_classes, 1, bias=False)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        x = self.bn0(torch.cat([first, second], dim=1))
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.seg_conv(self.residual(x))


def load_parity_weights(model: nn.Module, name: str, shared: Path, salt: str = "") -> nn.Module:
    """`model` (the torch re-expression of parity model `name`) in eval mode with the parity fixtures'
    synthetic weights for `name`, loaded with strict keys."""
    parity = shared / "parity"
    sys.path.insert(0, str(parity))
    from synth_weights import synth_state_dict  # the fixtures' own weight recipe

    manifest = json.loads((parity / "manifests" / f"{name}.json").read_text())
    state = synth_state_dict(manifest, salt, dict(np.load(parity / "bn_stats" / f"{name}.npz")))
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
    return model.eval()


def check_against_fixtures(models: dict[str, nn.Module], shared: Path) -> dict[str, float]:
    """Max |torch - original| / max|original| of each model on its module fixture; raises above 1e-4.

    Backbones take the fixture's `input`, refiners its `(fine, coarse)`; all give `logits`."""
    errors = {}
    with torch.inference_mode():
        for name, model in models.items():
            fx = np.load(shared / "parity" / "modules" / f"{name}.npz")
            args = ("fine", "coarse") if name.startswith("refine") else ("input",)
            got = model(*(torch.from_numpy(fx[a]) for a in args)).numpy()
            errors[name] = float(np.abs(got - fx["logits"]).max() / np.abs(fx["logits"]).max())
    bad = {k: v for k, v in errors.items() if not v <= 1e-4}
    if bad:
        raise SystemExit(f"torch_reference: outputs differ from the original's module fixtures: {bad}")
    return errors
