"""Model and generator registries with uniform constructors (the timm idea).

Every classifier takes images in [0, 1] and normalises them internally with a fixed per-channel
mean/std, so attacks and generators work in plain pixel space. Every classifier has the same
surface:

- ``forward(x) -> logits`` and ``forward(x) == head(features(x))``;
- ``features(x) -> (N, D)`` penultimate features (global-average-pooled last feature map);
- ``blocks: nn.ModuleList``: the feature stages, run in order on the normalised input; forward
  hooks on them see every intermediate feature map (CUTI-domain re-styling, DFKD probes);
- ``head: nn.Linear`` and ``feature_dim``.

``create_model(name, *, num_classes, width, in_ch)`` and ``create_generator(name, *, nz, width,
img_size, out_ch)`` look names up in ``MODELS`` / ``GENERATORS``; unknown names raise ``BadInput``
listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.registry import Registry

ModelFactory = Callable[..., "Classifier"]
GeneratorFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")
GENERATORS: Registry[GeneratorFactory] = Registry("generator")

PIXEL_MEAN = 0.5
PIXEL_STD = 0.5


class Classifier(nn.Module):
    """Normalise -> ``blocks`` in order -> global average pool -> ``head``."""

    def __init__(self, blocks: Sequence[nn.Module], feature_dim: int, num_classes: int, in_ch: int) -> None:
        super().__init__()
        # Constants, not state: kept out of the state dict so checkpoints hold weights only.
        self.register_buffer("pixel_mean", torch.full((1, in_ch, 1, 1), PIXEL_MEAN), persistent=False)
        self.register_buffer("pixel_std", torch.full((1, in_ch, 1, 1), PIXEL_STD), persistent=False)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.in_ch = in_ch

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pixel_mean) / self.pixel_std

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map (N, C, H, W) of ``blocks`` applied to normalised ``x`` in [0, 1]."""
        h = self.normalize(x)
        for block in self.blocks:
            h = block(h)
        return h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_map(x), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# Small CNNs (teacher and student for the offline quickstart)


def _plain_cnn(channels: Sequence[int], num_classes: int, in_ch: int, spatial_fc: int = 0) -> Classifier:
    blocks = []
    cin = in_ch
    for cout in channels:
        blocks.append(nn.Sequential(*_conv_bn_relu(cin, cout), nn.MaxPool2d(2)))
        cin = cout
    if spatial_fc:
        # A conv spanning the whole last map (4x4 at 32x32 input): a position-aware dense layer, so
        # the pooled features keep where things are (global average pooling alone loses it).
        blocks.append(nn.Sequential(nn.Conv2d(cin, cin, spatial_fc, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True)))
    model = Classifier(blocks, cin, num_classes, in_ch)
    _init_weights(model)
    return model


@MODELS.register("cnn")
def cnn(*, num_classes: int = 10, width: int = 32, in_ch: int = 3) -> Classifier:
    """Teacher CNN: three conv-BN-ReLU-maxpool blocks (width, 2*width, 4*width channels), then a
    4x4 conv-BN-ReLU over the whole 4x4 map (features: 4*width)."""
    return _plain_cnn([width, 2 * width, 4 * width], num_classes, in_ch, spatial_fc=4)


@MODELS.register("cnn-student")
def cnn_student(*, num_classes: int = 10, width: int = 16, in_ch: int = 3) -> Classifier:
    """Student CNN: three conv-BN-ReLU-maxpool blocks (width, 2*width, 2*width channels)."""
    return _plain_cnn([width, 2 * width, 2 * width], num_classes, in_ch)


# ---------------------------------------------------------------------------------------------
# CIFAR VGG with BatchNorm: one block per resolution (5 max-pools: 32 -> 1)

_VGG_STAGES = {
    "vgg11": [[1], [2], [4, 4], [8, 8], [8, 8]],
    "vgg13": [[1, 1], [2, 2], [4, 4], [8, 8], [8, 8]],
}


def _vgg(stages: list[list[int]], num_classes: int, width: int, in_ch: int) -> Classifier:
    blocks = []
    cin = in_ch
    for stage in stages:
        layers: list[nn.Module] = []
        for mult in stage:
            layers += _conv_bn_relu(cin, mult * width)
            cin = mult * width
        layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
    model = Classifier(blocks, cin, num_classes, in_ch)
    _init_weights(model)
    return model


@MODELS.register("vgg11")
def vgg11(*, num_classes: int = 10, width: int = 64, in_ch: int = 3) -> Classifier:
    return _vgg(_VGG_STAGES["vgg11"], num_classes, width, in_ch)


@MODELS.register("vgg13")
def vgg13(*, num_classes: int = 10, width: int = 64, in_ch: int = 3) -> Classifier:
    return _vgg(_VGG_STAGES["vgg13"], num_classes, width, in_ch)


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet (3x3 stem, no max-pool): blocks = [stem, layer1, layer2, layer3, layer4]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _resnet(depths: Sequence[int], num_classes: int, width: int, in_ch: int) -> Classifier:
    blocks: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(in_ch, width))]
    cin = width
    for i, depth in enumerate(depths):
        cout = width * 2**i
        layer = []
        for j in range(depth):
            layer.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
            cin = cout
        blocks.append(nn.Sequential(*layer))
    model = Classifier(blocks, cin, num_classes, in_ch)
    _init_weights(model)
    return model


@MODELS.register("resnet18")
def resnet18(*, num_classes: int = 10, width: int = 64, in_ch: int = 3) -> Classifier:
    return _resnet([2, 2, 2, 2], num_classes, width, in_ch)


@MODELS.register("resnet34")
def resnet34(*, num_classes: int = 10, width: int = 64, in_ch: int = 3) -> Classifier:
    return _resnet([3, 4, 6, 3], num_classes, width, in_ch)


# ---------------------------------------------------------------------------------------------
# Generators


class DCGANGenerator(nn.Module):
    """DFQ / Fast-Datafree generator: z -> linear -> (2*width, s/4, s/4) -> 2 upsample-conv blocks
    -> conv -> sigmoid, so samples are images in [0, 1] like every real domain."""

    def __init__(self, nz: int, width: int, img_size: int = 32, out_ch: int = 3) -> None:
        super().__init__()
        if img_size % 4:
            raise ValueError(f"img_size must be a multiple of 4, got {img_size}")
        self.nz = nz
        self.init_size = img_size // 4
        self.l1 = nn.Linear(nz, 2 * width * self.init_size**2)
        self.width = width
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, out_ch, 3, 1, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.l1(z).view(z.shape[0], 2 * self.width, self.init_size, self.init_size)
        return torch.sigmoid(self.conv_blocks(h))


@GENERATORS.register("dcgan")
def dcgan(*, nz: int = 64, width: int = 16, img_size: int = 32, out_ch: int = 3) -> nn.Module:
    return DCGANGenerator(nz, width, img_size, out_ch)


# ---------------------------------------------------------------------------------------------


def create_model(
    name: str, *, num_classes: int = 10, width: int, in_ch: int = 3, field: str | None = None
) -> Classifier:
    """Build a registered classifier; ``field`` names the config field in the unknown-name error."""
    return MODELS.get(name, field=field)(num_classes=num_classes, width=width, in_ch=in_ch)


def create_generator(
    name: str, *, nz: int, width: int, img_size: int = 32, out_ch: int = 3, field: str | None = None
) -> nn.Module:
    return GENERATORS.get(name, field=field)(nz=nz, width=width, img_size=img_size, out_ch=out_ch)


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm2d layers of ``model`` in module order (DFQ matches their running stats)."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
