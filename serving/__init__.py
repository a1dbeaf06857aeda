"""handssca.serving: the network behind NVIDIA Triton Inference Server. No torch.

repository.py   write_repository / check_repository: a Triton model repository (ensemble of
                preprocess -> network -> MANO mesh) from an exported .onnx or engine
backends.py     the python-backend models that repository runs (inside Triton's stub)
server.py       the server's own environment (setup_server_environment) and TritonServer,
                a context manager that starts, checks and stops tritonserver
client.py       HandMeshClient: frames and boxes in, HandPrediction out (gRPC or HTTP)
load_test.py    concurrent clients against a running server: throughput, latency, parity
"""

from handssca.lazy import lazy_attributes

_HOMES = {
    "ServingOptions": ".repository",
    "write_repository": ".repository",
    "check_repository": ".repository",
    "TritonServer": ".server",
    "ServerEnvironment": ".server",
    "setup_server_environment": ".server",
    "HandMeshClient": ".client",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_attributes(__name__, _HOMES)
