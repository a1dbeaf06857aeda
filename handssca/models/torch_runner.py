"""A PyTorch HandSSCA network behind the runners' contract (``handssca.runtime.backends.runner``).

``OnnxRunner``, ``TensorRTRunner`` and ``TorchRunner`` look alike to the predictor, the evaluation
and the benchmarks, so PyTorch is compared with the deployed engines through the same code.
It lives with the models, not in ``handssca.runtime``, which never imports torch.
"""

from __future__ import annotations

import numpy as np
import torch

from handssca.ops import use_scan_backend
from handssca.runtime.backends.base import Runner
from handssca.runtime.crop import IMAGE_MEAN, IMAGE_STD


class TorchRunner(Runner):
    """``TorchRunner(net).run(images)`` -> {output name: float32 array}, under inference mode.

    device: where the images go (the network must already be there). scan_backend: force a
    selective-scan implementation ("reference", "mamba-ssm", ...; None: automatic). forward: a
    replacement for ``net`` (e.g. ``torch.compile(net)``) with the same outputs.
    """

    def __init__(self, net, device: str = "cpu", scan_backend: str | None = None, forward=None, name: str = "pytorch"):
        self.name = name
        self.net = net.eval()
        self.device, self.scan_backend = torch.device(device), scan_backend
        self.forward = forward if forward is not None else self.net
        size = net.config.input_size
        self.input_shape = ["batch", 3, size, size]
        # What the exporter writes into the ONNX metadata, so pre-processing is identical.
        self.metadata = {
            "input": {"shape": self.input_shape, "colour_order": "RGB", "mean": IMAGE_MEAN, "std": IMAGE_STD},
            "mano": {"in_graph": False},
        }

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode(), use_scan_backend(self.scan_backend or "auto"):
            outputs = self.forward(torch.from_numpy(images).to(self.device))
            return {k: v.float().cpu().numpy() for k, v in outputs.items()}
