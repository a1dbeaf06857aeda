"""Runs an exported HandSSCA .onnx in ONNX Runtime, the scan nodes on our CPU kernel. No torch.

ONNX Runtime can run the single file as it is through onnxruntime-extensions
(``scan_ort_bridge.register_ort_scan_op``), but that bridge copies every tensor through Python at about
60 ns per element, which costs more than the scans themselves. So the graph is cut at the scan
nodes: each stage between them is its own ORT session, and the scans run on the kernel directly
on the arrays ORT returns. The file, its metadata and its outputs are the same either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handssca.errors import RunError
from handssca.runtime.backends.base import Runner
from handssca.runtime.backends.onnx_file import read_onnx
from handssca.runtime.scan.kernel import selective_scan_forward
from handssca.runtime.scan.node import DOMAIN, OP_TYPE, OP_VERSION, register_scan_schema

# Domains ONNX Runtime implements itself; a node of any other domain needs a registration.
_BUILTIN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.training", "ai.onnx.preview.training"}
_OPTIMIZATION = {
    "none": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


@dataclass
class Stage:
    """A run of standard nodes between scan nodes: ``scans`` run first (their inputs are ready),
    then ``model`` (a standard-ops ONNX model, or None) maps ``inputs`` to ``outputs``."""

    scans: list = field(default_factory=list)
    model: object = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    session: object = None


def _is_scan(node) -> bool:
    return node.op_type == OP_TYPE and node.domain == DOMAIN


class OnnxRunner(Runner):
    """``OnnxRunner(path_or_bytes).run(image)`` -> dict of output arrays.

    image: (B, 3, S, S) float32, normalised as the metadata's ``input`` says.
    device: "cpu" or "cuda" (ONNX Runtime's CUDA provider; the scan nodes still run on the CPU
    kernel, so on a GPU prefer the TensorRT engine). threads: ORT intra-op threads (0: ORT's
    default); the scan kernel uses OpenMP's default. optimization: ORT's graph optimisation
    level, none | basic | extended | all.
    """

    error = RunError

    def __init__(
        self,
        source: str | Path | bytes,
        device: str = "cpu",
        threads: int = 0,
        optimization: str = "all",
        providers: list[str] | None = None,
    ):
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            raise RunError(f"running ONNX models needs onnx and onnxruntime ({exc})") from exc
        file = read_onnx(source, error=RunError)
        model = file.model
        self.name, self.metadata = file.name, file.metadata
        self.input_name, self.input_shape, self.input_dtype = file.input_name, file.input_shape, file.input_dtype
        self.output_names = file.output_names
        self._check_versions(model, onnx)
        graph = model.graph

        if optimization not in _OPTIMIZATION:
            raise RunError(f"optimization {optimization!r}: expected one of {', '.join(_OPTIMIZATION)}")
        self._options = ort.SessionOptions()
        self._options.intra_op_num_threads = threads
        self._options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPTIMIZATION[optimization])
        # Idle ORT threads must not spin while the kernel's OpenMP threads run between stages.
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if providers is None:
            if device not in _PROVIDERS:
                raise RunError(f"device {device!r}: expected one of {', '.join(_PROVIDERS)}")
            available = ort.get_available_providers()
            if _PROVIDERS[device][0] not in available:
                raise RunError(
                    f"{self.name}: ONNX Runtime here has no {_PROVIDERS[device][0]} (available: "
                    f"{', '.join(available)}); install onnxruntime-gpu for device 'cuda'"
                )
            providers = _PROVIDERS[device]
        self.providers = providers
        self._ort = ort
        self._constants = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
        try:
            self._stages = self._build_stages(model)
        except RunError:
            raise
        except Exception as exc:  # ORT's own failures: unsupported opset, unknown op ...
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunError(f"{self.name}: {message}") from exc

    def _check_versions(self, model, onnx) -> None:
        """Files this installation cannot run, said before ONNX Runtime says it less clearly."""
        if model.ir_version > onnx.IR_VERSION:
            raise RunError(
                f"{self.name}: ONNX IR version {model.ir_version} is newer than this onnx supports "
                f"({onnx.IR_VERSION}); upgrade onnx and onnxruntime, or re-export with the versions installed here"
            )
        newest = onnx.defs.onnx_opset_version()
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx") and entry.version > newest:
                raise RunError(
                    f"{self.name}: opset {entry.version} is newer than this installation supports ({newest}); "
                    f"upgrade onnx and onnxruntime, or re-export with --opset {newest} or lower"
                )
            if entry.domain == DOMAIN and any(_is_scan(n) for n in model.graph.node) and entry.version != OP_VERSION:
                raise RunError(
                    f"{self.name}: the {OP_TYPE} node is version {entry.version}; this runtime implements "
                    f"version {OP_VERSION} (upgrade handssca, or re-export with this version)"
                )
        for node in model.graph.node:
            if node.domain not in _BUILTIN_DOMAINS and not _is_scan(node):
                raise RunError(
                    f"{self.name}: node '{node.name}' ({node.domain}:{node.op_type}) is a custom op with no "
                    f"registered implementation (this runtime implements {DOMAIN}:{OP_TYPE} only)"
                )

    def _session(self, model_bytes: bytes):
        return self._ort.InferenceSession(model_bytes, self._options, providers=self.providers)

    def _build_stages(self, model) -> list[Stage]:
        stages = cut_at_scans(model, self.input_name, self.output_names, set(self._constants))
        for stage in stages:
            if stage.model is not None:
                stage.session = self._session(stage.model.SerializeToString())
                stage.model = None  # the session holds what it needs
        return stages

    def _scan(self, node, values: dict) -> np.ndarray:
        u, delta, A, B, C, D, delta_bias = (values[t] if t in values else self._constants[t] for t in node.input)
        softplus = next((a.i for a in node.attribute if a.name == "delta_softplus"), 1)
        return selective_scan_forward(u, delta, A, B, C, D, None, delta_bias, bool(softplus))

    def _run(self, image: np.ndarray, timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """Outputs by name. ``timings``, when given, gains the milliseconds spent in the scan
        kernel ("scan_ms") and in ONNX Runtime ("ort_ms")."""
        values = self._values(image, timings)
        return {name: values[name] for name in self.output_names}

    def intermediates(self, image: np.ndarray, timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """Every tensor that crosses a cut at the scans, by name (the outputs among them): what
        each stage of ``cut_at_scans`` reads, for calibrating it on its own."""
        self.check(image)
        return self._values(image, timings)

    def _values(self, image: np.ndarray, timings: dict[str, float] | None) -> dict[str, np.ndarray]:
        values = {self.input_name: np.ascontiguousarray(image)}
        scan_s = ort_s = 0.0
        for stage in self._stages:
            start = time.perf_counter()
            for node in stage.scans:
                values[node.output[0]] = self._scan(node, values)
            middle = time.perf_counter()
            if stage.session is not None:
                results = stage.session.run(stage.outputs, {t: values[t] for t in stage.inputs})
                values.update(zip(stage.outputs, results, strict=True))
            scan_s += middle - start
            ort_s += time.perf_counter() - middle
        if timings is not None:
            timings["scan_ms"] = timings.get("scan_ms", 0.0) + scan_s * 1e3
            timings["ort_ms"] = timings.get("ort_ms", 0.0) + ort_s * 1e3
        return values


def cut_at_scans(model, input_name: str, output_names: list[str], constants: set[str]) -> list[Stage]:
    """``model`` cut at its scan nodes into Stages, in the order they run.

    A node's stage is the number of scans on its longest input path, so each stage's inputs are
    ready once the stages before it (and its own scans) have run. OnnxRunner runs the stages in
    ONNX Runtime and the scans on the kernel; the int8 export quantizes each stage on its own.
    """
    import onnx

    graph = model.graph
    if not any(_is_scan(n) for n in graph.node):
        return [Stage(model=model, inputs=[input_name], outputs=list(output_names))]
    register_scan_schema()
    model = onnx.shape_inference.infer_shapes(model)  # types of the tensors the cuts expose
    nodes = list(model.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    level = []
    for node in nodes:
        before = [level[producer[t]] for t in node.input if t in producer]
        level.append(max(before, default=0) + (1 if _is_scan(node) else 0))
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    outputs = set(output_names)
    extractor = onnx.utils.Extractor(model)
    stages = []
    for k in range(max(level) + 1):
        stage = Stage(scans=[n for n, lv in zip(nodes, level, strict=True) if lv == k and _is_scan(n)])
        members = [n for n, lv in zip(nodes, level, strict=True) if lv == k and not _is_scan(n)]
        if members:
            made = {t for n in members for t in n.output}
            stage.inputs = sorted({t for n in members for t in n.input if t and t not in made and t not in constants})
            stage.outputs = sorted(
                t
                for t in made
                if t in outputs or any(_is_scan(nodes[c]) or level[c] != k for c in consumers.get(t, []))
            )
            stage.model = extractor.extract_model(stage.inputs, stage.outputs)
        stages.append(stage)
    return stages
