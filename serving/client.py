"""A client of the served ensemble: frames and boxes in, the runtime's HandPrediction out.

The client crops exactly as HandMeshPredictor does (``hand_crops``: the square around each box,
left hands mirrored) and sends uint8 crops with their boxes and sides; the server normalises,
runs the network and MANO, and maps the keypoints back into the frame. Over gRPC (default) or
HTTP, with tritonclient:

    client = HandMeshClient("localhost:8001")
    hands = client.predict(frame_bgr, [(x0, y0, x1, y1)], sides=["right"])
    hands = client.predict(frame_bgr)  # the hands found in the frame, here in the client

Without boxes the hand finder (MediaPipe's palm detector and landmark model) runs in the client,
on the whole frame: it needs the full frame and runs before the crops exist, so in Triton it would
mean sending every whole frame over the network instead of the hands' crops, and one more
sequential step in the ensemble; in the client it costs what it costs in the runtime.
"""

from __future__ import annotations

import numpy as np

from handssca.errors import ServingError

from .repository import ENSEMBLE, MESH_OUTPUTS

PROTOCOLS = ("grpc", "http")


def tritonclient_module(protocol: str):
    if protocol not in PROTOCOLS:
        raise ServingError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise ServingError(f"the Triton client needs tritonclient: pip install 'handssca[serve]' ({exc})") from exc
    return module


class HandMeshClient:
    """Requests to the ``handssca`` ensemble of a running server at ``url`` (host:port)."""

    def __init__(self, url: str, protocol: str = "grpc", model: str = ENSEMBLE, timeout_s: float = 60.0, finder=None):
        self.module = tritonclient_module(protocol)
        self.finder = finder  # the HandFinder for frames without boxes (default: the shipped models)
        self.protocol, self.model, self.timeout_s = protocol, model, timeout_s
        if protocol == "grpc":
            self.client = self.module.InferenceServerClient(url)
        else:  # HTTP's timeouts are per connection; gRPC's are per call (client_timeout below)
            self.client = self.module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        try:
            config = self.client.get_model_config(model)
        except Exception as exc:  # tritonclient's InferenceServerException, refused connections
            self.client.close()
            raise ServingError(f"{url}: cannot read the config of model '{model}' ({_message(exc)})") from exc
        config = config["config"] if protocol == "grpc" and isinstance(config, dict) else config
        if not isinstance(config, dict):  # gRPC returns the protobuf message
            from google.protobuf import json_format

            config = json_format.MessageToDict(config.config, preserving_proto_field_name=True)
        crops = next(t for t in config["input"] if t["name"] == "crops")
        self.size = int(crops["dims"][0])
        self.max_batch = int(config.get("max_batch_size", 0)) or None
        self.rgb = config.get("parameters", {}).get("colour_order", {}).get("string_value", "RGB") == "RGB"
        self.output_names = [name for name, _, _ in MESH_OUTPUTS]

    def infer(self, crops: np.ndarray, boxes: np.ndarray, is_left: np.ndarray) -> dict[str, np.ndarray]:
        """One request: crops (B, S, S, 3) uint8, boxes (B, 4) float64, is_left (B, 1) bool ->
        the ensemble's outputs by name. ServingError with the server's message on refusal."""
        from tritonclient.utils import np_to_triton_dtype

        m = self.module
        try:
            inputs = []
            for name, array in (("crops", crops), ("boxes", boxes), ("is_left", is_left)):
                # Sent as they are: the server names a wrong type or shape, nothing is cast here.
                tensor = m.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            outputs = [m.InferRequestedOutput(name) for name in self.output_names]
            if self.protocol == "grpc":
                result = self.client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            else:
                result = self.client.infer(self.model, inputs, outputs=outputs)
        except Exception as exc:  # tritonclient's InferenceServerException, gRPC and socket errors
            raise ServingError(f"model '{self.model}': {_message(exc)}") from exc
        return {name: result.as_numpy(name) for name in self.output_names}

    def hand_finder(self):
        if self.finder is None:
            from handssca.runtime.hands.finder import HandFinder

            self.finder = HandFinder()
        return self.finder

    def predict(self, frame: np.ndarray, boxes=None, *, colour: str = "bgr", sides=None, K=None) -> list:
        """HandMeshPredictor.predict's contract, served: one HandPrediction per box, or per hand
        found when ``boxes`` is None (with the camera-frame translation when the intrinsics ``K``
        are given)."""
        from handssca.runtime.predictor import (
            attach_found,
            boxes_to_run,
            hand_crops,
            hand_predictions,
            in_network_colour,
        )

        boxes, sides, found = boxes_to_run(frame, boxes, sides, colour, self.hand_finder)
        if not boxes:
            return []
        crops, _ = hand_crops(in_network_colour(frame, colour, self.rgb), boxes, sides, self.size)
        box_array = np.asarray(boxes, np.float64)
        left = np.array([[s == "left"] for s in sides])
        step = self.max_batch or len(boxes)
        parts = [
            self.infer(crops[i : i + step], box_array[i : i + step], left[i : i + step])
            for i in range(0, len(boxes), step)
        ]
        hands = {name: np.concatenate([p[name] for p in parts]).astype(np.float64) for name in self.output_names}
        results = hand_predictions(boxes, sides, hands, K)
        attach_found(results, found)
        return results

    def close(self) -> None:
        """Closes the connection: Triton's graceful stop waits for open HTTP connections."""
        self.client.close()

    def __enter__(self) -> HandMeshClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _message(exc: Exception) -> str:
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    return (text or type(exc).__name__).splitlines()[0]
