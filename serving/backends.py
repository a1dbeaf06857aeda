"""The Triton python-backend models of a HandSSCA repository (each model.py imports one).

They run inside Triton's python stub, in the server's environment (``handssca serve setup``):
numpy, ONNX Runtime and this package's torch-free runtime; ``triton_python_backend_utils`` is the
stub's own module. Triton hands ``execute`` every request its dynamic batcher gathered; each
model checks the requests one by one (a bad one gets its own error response and never fails the
others), runs the good ones as one batch and splits the result back per request.

    PreprocessModel   uint8 crops (B, S, S, 3) -> the network's input (B, 3, S, S), normalised
    NetworkModel      OnnxRunner (the scan nodes on our CPU kernel) on 1/model.onnx
    MeshModel         network outputs + boxes + is_left -> meshes, as HandMeshPredictor makes them
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class _BatchedModel(ABC):
    """What the three models share: config parameters, per-request checks, one batch per call.
    Each model says how it sets up, what makes a request unusable, and how it runs a batch."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.config = json.loads(args["model_config"])
        self.folder = Path(args["model_repository"]) / args["model_version"]
        self.parameters = {k: v["string_value"] for k, v in self.config.get("parameters", {}).items()}
        self.inputs = [t["name"] for t in self.config["input"]]
        self.outputs = {t["name"]: pb_utils.triton_string_to_numpy(t["data_type"]) for t in self.config["output"]}
        self.setup()

    @abstractmethod
    def setup(self) -> None:
        """Reads what the model needs from its parameters and version folder."""

    def problem(self, arrays: dict[str, np.ndarray]) -> str | None:
        """Why one request cannot be run (None when it can)."""
        return None

    @abstractmethod
    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs, by name, of one batch of good requests joined along the batch axis."""

    def execute(self, requests):
        pb = self.pb
        responses: list = [None] * len(requests)
        good, batches = [], []
        for i, request in enumerate(requests):
            arrays = {name: pb.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            problem = self.problem(arrays)
            if problem:
                responses[i] = pb.InferenceResponse(output_tensors=[], error=pb.TritonError(problem))
            else:
                good.append(i)
                batches.append(arrays)
        if good:
            joined = {name: np.concatenate([b[name] for b in batches]) for name in self.inputs}
            try:
                results = self.run(joined)
            except Exception as exc:  # one line back to every client of this batch, the server goes on
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                for i in good:
                    responses[i] = pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message))
                return responses
            start = 0
            for i, arrays in zip(good, batches, strict=True):
                stop = start + len(arrays[self.inputs[0]])
                tensors = [
                    pb.Tensor(name, np.ascontiguousarray(results[name][start:stop], dtype=dtype))
                    for name, dtype in self.outputs.items()
                ]
                responses[i] = pb.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses


class PreprocessModel(_BatchedModel):
    def setup(self) -> None:
        self.mean = json.loads(self.parameters["mean"])
        self.std = json.loads(self.parameters["std"])
        self.output_name = next(iter(self.outputs))

    def run(self, arrays):
        from handssca.runtime.crop import normalise

        return {self.output_name: normalise(arrays["crops"], self.mean, self.std)}


class NetworkModel(_BatchedModel):
    def setup(self) -> None:
        from handssca.runtime.backends.onnx_runner import OnnxRunner

        self.model = OnnxRunner(self.folder / "model.onnx", threads=int(self.parameters.get("threads", "0")))
        self.model.warmup(1)

    def problem(self, arrays):
        from handssca.runtime.backends.base import batch_problem

        return batch_problem(arrays[self.inputs[0]])

    def run(self, arrays):
        return self.model.run(arrays[self.inputs[0]])


class MeshModel(_BatchedModel):
    def setup(self) -> None:
        from handssca.runtime.mano.files import load_mano

        self.size = int(self.parameters["size"])
        self.fingertip_ids = tuple(json.loads(self.parameters["fingertip_ids"]))
        self.mano = None if json.loads(self.parameters["mano_in_graph"]) else load_mano(self.folder / "mano.npz")

    def problem(self, arrays):
        from handssca.runtime.crop import square_from_box

        for box in arrays["boxes"]:
            try:
                square_from_box(box)
            except ValueError as exc:
                return str(exc)
            if not np.isfinite(box).all():
                return f"hand box {tuple(box)} is not finite"
        return None

    def run(self, arrays):
        from handssca.runtime.predictor import hand_affines, hand_arrays

        sides = ["left" if left else "right" for left in arrays["is_left"].reshape(-1)]
        affines = hand_affines(arrays["boxes"], sides, self.size)
        hands = hand_arrays(arrays, affines, sides, self.size, self.mano, self.fingertip_ids)
        hands["confidence"] = hands["confidence"][:, None]
        return hands
