"""The PyTorch side of the comparisons: the seed's §4.1 CNN and torchvision's ResNet-18.

torchvision is not installed here (and must not be downloaded), so ResNet-18 is rebuilt with
torchvision's module names and initialization; its ``state_dict`` keys and shapes are
torchvision's, so it also serves as the reference for weight-conversion and parity checks
(``sys.path.insert(0, "scripts"); from torch_reference import resnet18``).
"""

import numpy as np
import torch
from torch import nn


class ConvLayer(nn.Module):
    """The seed's ``ConvLayer`` (§4.1), unchanged."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


class SeedCNN(nn.Module):
    """The seed's ``CNN`` with what tfvision's port adds so 32×32 inputs fit.

    A 2×2 max-pool after each ``ConvLayer`` (the seed's §3.3 text), so ``fc1`` sees
    64·8·8 features, and a ReLU after ``fc1`` (its §3.4): the same layers and FLOPs as
    ``tfvision.models.scratch_cnn``.
    """

    def __init__(self, num_classes=10, image_size=32):
        super().__init__()
        self.conv1 = ConvLayer(3, 32, 3, 1, 1)
        self.conv2 = ConvLayer(32, 64, 3, 1, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * (image_size // 4) ** 2, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        # The seed's x.view(x.size(0), -1), as reshape: the same values, and it also takes
        # the channels_last tensors the benchmark's tuned variant feeds it.
        x = x.reshape(x.size(0), -1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` for basic blocks (ResNet-18/34), same names and init."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for stage, blocks in enumerate(layers):
            planes = 64 * 2**stage
            stride = 1 if stage == 0 else 2
            stage_blocks = [BasicBlock(inplanes, planes, stride)]
            stage_blocks += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*stage_blocks))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes=1000):
    """``torchvision.models.resnet18(weights=None, num_classes=num_classes)``."""
    return ResNet((2, 2, 2, 2), num_classes)


def resnet34(num_classes=1000):
    """``torchvision.models.resnet34(weights=None, num_classes=num_classes)``."""
    return ResNet((3, 4, 6, 3), num_classes)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def reference_resnet(arch="resnet18", seed=0):
    """A torchvision-architecture ResNet in eval mode with non-trivial BatchNorm: running
    statistics measured on a random batch (as training would leave them, so activations stay
    in a realistic range through every block) and random affine terms."""
    torch.manual_seed(seed)
    module = {"resnet18": resnet18, "resnet34": resnet34}[arch]()
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.copy_(0.2 * torch.randn(m.num_features, generator=gen))
            m.momentum = 1.0  # running statistics := this batch's
        module.train()
        module(torch.randn(4, 3, 96, 96, generator=gen))
        for m in norms:
            m.momentum = 0.1
    return module.eval()


def imagenet_input(pixels):
    """NHWC pixels in [0, 255] → torchvision's normalized NCHW tensor."""
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
