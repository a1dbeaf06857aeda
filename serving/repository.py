"""A Triton model repository for an exported HandSSCA network, written and checked in one call.

    REPO/
      handssca/               ensemble: crops + boxes + is_left -> hand meshes (what clients call)
        config.pbtxt
        1/                    (empty: Triton wants a version folder for an ensemble too)
      handssca_preprocess/    python: uint8 crops (B, S, S, 3) -> the network's normalised input
      handssca_network/       .onnx: python running OnnxRunner (our CPU scan kernel) on 1/model.onnx
                              engine: tensorrt_plan on 1/model.plan (the plugin from plugins/)
      handssca_mesh/          python: MANO (1/mano.npz) + keypoints in image pixels, as the predictor
      plugins/                engines only: the scan plugin library Triton must load
      handssca_repository.json   what this was written from (model hash, versions, options) and
                              the SHA-256 of every file above but the configs

Every config is built as Triton's own ``ModelConfig`` protobuf (from tritonclient) and printed
with protobuf's text format, so it is well-formed by construction; ``check_repository`` parses
each config.pbtxt back with the same definitions and checks what the parser cannot: folder and
model names, version folders and their files, batch sizes, and that each ensemble step's tensors
exist in the model it calls with the same type and shape; and, unless told to trust a modified
one, that the network's and the python steps' files are the ones the manifest records (a
repository edited by hand is never served by mistake). The python models' code is
``handssca.serving.backends`` (each model.py is one import), so the server's environment runs
the same tested code as this package.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from handssca import __version__
from handssca.errors import ModelFileError, OutputError
from handssca.runtime.files import sha256_file, write_together

ENSEMBLE = "handssca"
PREPROCESS = "handssca_preprocess"
NETWORK = "handssca_network"
MESH = "handssca_mesh"
MANIFEST = "handssca_repository.json"
MANIFEST_FORMAT = "handssca-triton-repository/1"
PLUGIN_FOLDER = "plugins"
# Triton's TensorRT backend dlopens the libraries of its `plugins` setting and needs them to
# register as they load; this one (plugins/triton/) loads libhandssca_plugins.so for it.
TRITON_LOADER = "libhandssca_plugins_triton.so"
MODEL_PY = "# Written by 'handssca serve repository'; the code is handssca.serving.backends.{cls}.\n" \
    "from handssca.serving.backends import {cls} as TritonPythonModel  # noqa: F401\n"  # fmt: skip

# How to go on from a repository whose files are not the ones its manifest records.
REWRITE = "rewrite it with 'handssca serve repository', or pass --trust-modified to use it as it is"

# What the ensemble returns per hand (name, numpy dtype name, shape without the batch axis).
MESH_OUTPUTS = (
    ("vertices", "float32", (778, 3)),  # metres, root-relative, camera axes
    ("joints_3d", "float32", (21, 3)),  # metres, root-relative
    ("keypoints_2d", "float32", (21, 2)),  # image pixels
    ("pose", "float32", (48,)),  # MANO axis-angle of the hand as it is (left hands mirrored back)
    ("shape", "float32", (10,)),
    ("confidence", "float32", (1,)),  # mean heatmap peak of the 21 joints
)
# The network outputs the mesh model reads (MANO in the graph adds vertices and joints_3d).
MESH_READS = ("heatmaps", "joints_2d", "pose", "shape")
MANO_IN_GRAPH = ("vertices", "joints_3d")


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy's name: float32, uint8 ...
    shape: tuple  # without the batch axis


@dataclass
class NetworkIO:
    """The network's input and outputs as Triton sees them, and the export's metadata."""

    kind: str  # "onnx" or "engine"
    input: Tensor
    outputs: list[Tensor]
    metadata: dict
    max_batch: int | None  # the engine profile's largest batch; None for an ONNX file
    plugin: Path | None = None  # engines: the scan plugin library
    onnx: object = None  # .onnx: the graph as read (onnx.ModelProto), external data embedded


@dataclass
class ServingOptions:
    """Scheduling of the repository's models (Triton's model configuration fields)."""

    max_batch: int = 16  # max_batch_size of every model
    preferred_batch: int = 8  # dynamic_batching.preferred_batch_size of the network
    queue_delay_us: int = 2000  # dynamic_batching.max_queue_delay_microseconds
    dynamic_batching: bool = True
    instances: int = 1  # instance_group count of the network
    version: int = 1
    threads: int = 0  # python network: ONNX Runtime intra-op threads (0: its default)

    def check(self) -> None:
        for name, least in (("max_batch", 1), ("preferred_batch", 1), ("queue_delay_us", 0), ("instances", 1),
                            ("version", 1), ("threads", 0)):  # fmt: skip
            if getattr(self, name) < least:
                raise ModelFileError(f"{name} = {getattr(self, name)}: must be at least {least}")
        if self.dynamic_batching and self.preferred_batch > self.max_batch:
            raise ModelFileError(
                f"preferred batch {self.preferred_batch} is larger than the max batch {self.max_batch}"
            )


def _pb():
    """Triton's model configuration protobuf and protobuf's text format (tritonclient[grpc])."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise ModelFileError(
            f"writing and checking Triton configs needs tritonclient: pip install 'handssca[serve]' ({exc})"
        ) from exc
    return model_config_pb2, text_format


def _dims(shape) -> list[int]:
    return [int(d) if isinstance(d, int) and d > 0 else -1 for d in shape]


def _onnx_io(path: Path) -> NetworkIO:
    import onnx

    from handssca.runtime.backends.onnx_file import read_onnx

    file = read_onnx(path, error=ModelFileError)
    if not file.metadata:
        raise ModelFileError(f"{path}: no HandSSCA metadata (export it with handssca export)")
    if file.batch is not None:  # Triton hands a model any batch up to max_batch_size
        raise ModelFileError(f"{path}: exported with a fixed batch of {file.batch}; export it without --batch")

    def tensor(value) -> Tensor:
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        return Tensor(value.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, tuple(_dims(dims[1:])))

    image = next(i for i in file.model.graph.input if i.name == file.input_name)
    outputs = [tensor(o) for o in file.model.graph.output]
    return NetworkIO("onnx", tensor(image), outputs, file.metadata, None, onnx=file.model)


def _engine_io(path: Path, plugin) -> NetworkIO:
    from handssca.runtime.backends.tensorrt_libs import find_plugin_library, sidecar_path_for

    sidecar_path = sidecar_path_for(path)
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except FileNotFoundError:
        raise ModelFileError(
            f"{path}: its sidecar {sidecar_path.name} is missing (build engines with build-engine)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{sidecar_path}: not valid JSON ({exc})") from exc
    io = sidecar.get("io")
    if not io or not sidecar.get("model"):
        raise ModelFileError(
            f"{sidecar_path}: records no input/output tensors (an engine built before handssca 0.1's serving): "
            "rebuild it with handssca build-engine"
        )
    image = next(t for t in io if t["is_input"])
    if image["shape"][0] != -1 or sidecar["profile"]["min"][0] != 1:
        raise ModelFileError(
            f"{path}: Triton hands an engine any batch from 1 to max_batch_size; build it from an export with a "
            f"dynamic batch and --min-batch 1 (this one: batch {image['shape'][0]}, profile from "
            f"{sidecar['profile']['min'][0]})"
        )
    tensors = [Tensor(t["name"], t["dtype"], tuple(_dims(t["shape"][1:]))) for t in io]
    inputs = [t for t, raw in zip(tensors, io, strict=True) if raw["is_input"]]
    outputs = [t for t, raw in zip(tensors, io, strict=True) if not raw["is_input"]]
    library = find_plugin_library(plugin or sidecar.get("plugin_library"))
    loader = library.with_name(TRITON_LOADER)
    if not loader.is_file():
        raise ModelFileError(
            f"{loader}: missing beside the plugin library; Triton's TensorRT backend needs it to register the "
            "plugin (build plugins/ with -DTENSORRT_LIB_DIR=<folder with libnvinfer.so>)"
        )
    return NetworkIO("engine", inputs[0], outputs, sidecar["model"], int(sidecar["profile"]["max"][0]), library)


def network_io(model: str | Path, plugin=None) -> NetworkIO:
    """The exported model's I/O and metadata: from the .onnx graph, or an engine's sidecar."""
    from handssca.runtime.backends.runner import ENGINE_SUFFIXES

    path = Path(model)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_io(path)
    if suffix in ENGINE_SUFFIXES:
        return _engine_io(path, plugin)
    raise ModelFileError(f"{path}: serve an exported .onnx or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")


def _add_tensors(fields, tensors) -> None:
    from tritonclient.utils import np_to_triton_dtype  # numpy's dtype -> Triton's name ("FP32" ...)

    for t in tensors:
        fields.add(name=t.name, data_type=f"TYPE_{np_to_triton_dtype(np.dtype(t.dtype))}", dims=list(t.shape))


def _batching(config, options: ServingOptions, network: bool) -> None:
    """Only the network waits (up to the queue delay) for a fuller batch: it is where a batch can
    pay (on a GPU; on 2 CPU cores it does not, see docs/benchmarks.md). The light python
    steps batch whatever is queued when they are free, without waiting."""
    if not options.dynamic_batching:
        return
    config.dynamic_batching.SetInParent()
    if network:
        config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
        config.dynamic_batching.preferred_batch_size.append(options.preferred_batch)


def _python_config(pb, name: str, inputs, outputs, options: ServingOptions, parameters: dict, network: bool = False):
    """A python-backend model; the network's gets the instance count and the preferred batch."""
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=options.max_batch)
    _add_tensors(config.input, inputs)
    _add_tensors(config.output, outputs)
    config.instance_group.add(count=options.instances if network else 1, kind=pb.ModelInstanceGroup.KIND_CPU)
    _batching(config, options, network)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def build_configs(io: NetworkIO, options: ServingOptions, fingertip_ids) -> dict[str, object]:
    """The four ModelConfig messages, by model name."""
    pb, _ = _pb()
    meta_input = io.metadata["input"]
    size = int(meta_input["shape"][2])
    crops = Tensor("crops", "uint8", (size, size, 3))
    # Boxes in float64, as the predictor takes them: the server's crop affine is then the client's.
    boxes, is_left = Tensor("boxes", "float64", (4,)), Tensor("is_left", "bool", (1,))
    outputs_by_name = {t.name: t for t in io.outputs}
    missing = [n for n in MESH_READS if n not in outputs_by_name]
    if missing:
        raise ModelFileError(f"the network has no output {', '.join(missing)} (not a HandSSCA export?)")
    mano_in_graph = all(n in outputs_by_name for n in MANO_IN_GRAPH)
    mesh_reads = [outputs_by_name[n] for n in MESH_READS + (MANO_IN_GRAPH if mano_in_graph else ())]
    mesh_outputs = [Tensor(n, d, s) for n, d, s in MESH_OUTPUTS]
    shared = {"handssca_version": __version__}

    preprocess = _python_config(
        pb, PREPROCESS, [crops], [io.input], options,
        {**shared, "mean": json.dumps(meta_input["mean"]), "std": json.dumps(meta_input["std"])},
    )  # fmt: skip
    if io.kind == "onnx":
        network = _python_config(
            pb, NETWORK, [io.input], io.outputs, options, {**shared, "threads": str(options.threads)}, network=True
        )
    else:
        network = pb.ModelConfig(name=NETWORK, platform="tensorrt_plan", max_batch_size=options.max_batch)
        _add_tensors(network.input, [io.input])
        _add_tensors(network.output, io.outputs)
        network.instance_group.add(count=options.instances, kind=pb.ModelInstanceGroup.KIND_GPU)
        _batching(network, options, network=True)
    mesh = _python_config(
        pb, MESH, mesh_reads + [boxes, is_left], mesh_outputs, options,
        {**shared, "size": str(size), "fingertip_ids": json.dumps(list(fingertip_ids)),
         "mano_in_graph": json.dumps(mano_in_graph)},
    )  # fmt: skip

    ensemble = pb.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=options.max_batch)
    _add_tensors(ensemble.input, [crops, boxes, is_left])
    _add_tensors(ensemble.output, mesh_outputs)
    ensemble.parameters["colour_order"].string_value = meta_input.get("colour_order", "RGB")
    ensemble.parameters["handssca_version"].string_value = __version__
    steps = ensemble.ensemble_scheduling.step
    step = steps.add(model_name=PREPROCESS, model_version=-1)
    step.input_map["crops"] = "crops"
    step.output_map[io.input.name] = io.input.name
    step = steps.add(model_name=NETWORK, model_version=-1)
    step.input_map[io.input.name] = io.input.name
    for t in mesh_reads:
        step.output_map[t.name] = f"network_{t.name}"
    step = steps.add(model_name=MESH, model_version=-1)
    for t in mesh_reads:
        step.input_map[t.name] = f"network_{t.name}"
    step.input_map["boxes"], step.input_map["is_left"] = "boxes", "is_left"
    for t in mesh_outputs:
        step.output_map[t.name] = t.name
    return {ENSEMBLE: ensemble, PREPROCESS: preprocess, NETWORK: network, MESH: mesh}


@dataclass
class RepositoryReport:
    path: Path
    models: list[str]
    files: list[Path] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        kind = "TensorRT engine + plugin" if self.manifest.get("kind") == "engine" else "ONNX Runtime + scan kernel"
        return [
            f"wrote {self.path} (version {self.manifest.get('version')}; {kind}): {', '.join(self.models)}",
            f"serve it: handssca serve start {self.path}",
        ]


def write_repository(
    model: str | Path,
    output: str | Path,
    *,
    mano: str | Path | None = None,
    fingertips: str = "smplx",
    plugin: str | Path | None = None,
    options: ServingOptions | None = None,
) -> RepositoryReport:
    """Writes the repository for ``model`` (an exported .onnx, or an engine with its sidecar) to
    ``output``, a new folder (or one this wrote before, to add a version). It is built in a
    temporary folder beside ``output``, checked, then moved into place: a failure leaves nothing."""
    from handssca.runtime.mano.files import save_mano_npz
    from handssca.runtime.mano.load import load_hand_model

    options = options or ServingOptions()
    options.check()
    model, output = Path(model), Path(output)
    io = network_io(model, plugin)
    if io.max_batch is not None and options.max_batch > io.max_batch:
        raise ModelFileError(
            f"{model}: takes batches up to {io.max_batch}; serve it with --max-batch {io.max_batch} or less "
            "(and --preferred-batch no larger)"
        )
    mano_model, fingertip_ids, mano_label = load_hand_model(mano, fingertips)
    configs = build_configs(io, options, fingertip_ids)
    _, text_format = _pb()
    if output.exists() and not (output / MANIFEST).is_file():
        kind = "folder" if output.is_dir() else "file"
        raise ModelFileError(f"{output}: a {kind} that is not a HandSSCA model repository is in the way")
    version = str(options.version)
    if (output / NETWORK / version).exists():
        raise ModelFileError(f"{output}: version {version} exists already; pass --version {_next_version(output)}")

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    except OSError as exc:
        raise OutputError(f"{output}: cannot write it ({exc.strerror or exc})") from exc
    try:
        for name, config in configs.items():
            (staging / name / version).mkdir(parents=True)
            (staging / name / "config.pbtxt").write_text(text_format.MessageToString(config))
        for name, cls in ((PREPROCESS, "PreprocessModel"), (MESH, "MeshModel")):
            (staging / name / version / "model.py").write_text(MODEL_PY.format(cls=cls))
        network_dir = staging / NETWORK / version
        if io.kind == "onnx":
            (network_dir / "model.py").write_text(MODEL_PY.format(cls="NetworkModel"))
            # One self-contained file: external weights (checked to lie inside the model's folder)
            # are embedded, since Triton's model folder holds nothing else beside it.
            (network_dir / "model.onnx").write_bytes(io.onnx.SerializeToString())
        else:
            shutil.copyfile(model, network_dir / "model.plan")
            (staging / PLUGIN_FOLDER).mkdir()
            # Side by side under these names: the loader opens libhandssca_plugins.so from its own folder.
            shutil.copyfile(io.plugin, staging / PLUGIN_FOLDER / "libhandssca_plugins.so")
            shutil.copyfile(io.plugin.with_name(TRITON_LOADER), staging / PLUGIN_FOLDER / TRITON_LOADER)
        save_mano_npz(mano_model, staging / MESH / version / "mano.npz")
        files = _earlier_files(output) | {name: sha256_file(path) for name, path in _served_files(staging).items()}
        manifest = {
            "format": MANIFEST_FORMAT,
            "handssca_version": __version__,
            "model": str(model),
            "model_sha256": sha256_file(model),
            "kind": io.kind,
            "version": options.version,
            "options": asdict(options),
            "mano": mano_label,
            "plugin": f"{PLUGIN_FOLDER}/{TRITON_LOADER}" if io.plugin else None,
            "input": asdict(io.input),
            "outputs": [asdict(t) for t in io.outputs],
            "export": {k: io.metadata.get(k) for k in ("precision", "weights", "weights_sha256", "handssca_version")},
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        # Its files were hashed a moment ago (and the older versions' are not in staging).
        check_repository(staging, names={ENSEMBLE, PREPROCESS, NETWORK, MESH}, trust_modified=True)
        _move_into_place(staging, output)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OutputError):  # already names its file
            raise
        raise OutputError(f"{output}: cannot write it ({exc.strerror or exc})") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RepositoryReport(output, list(configs), manifest=manifest)


def _next_version(repository: Path) -> int:
    versions = [int(p.name) for p in (repository / NETWORK).iterdir() if p.name.isdigit()]
    return max(versions, default=0) + 1


def _move_into_place(staging: Path, output: Path) -> None:
    """A new repository is one rename. Into an existing one, each model's new version folder is
    renamed in, then the configs and manifest are replaced together (the older versions stay)."""
    if not output.exists():
        os.replace(staging, output)
        return
    version_dirs = [p for p in staging.glob("*/*") if p.is_dir() and p.name.isdigit()]
    files = {
        output / p.relative_to(staging): p.read_bytes()
        for p in staging.rglob("*")
        if p.is_file() and not any(p.is_relative_to(v) for v in version_dirs)
    }
    moved: list[tuple[Path, Path]] = []
    try:
        for p in version_dirs:
            (output / p.parent.name).mkdir(exist_ok=True)
            os.replace(p, output / p.parent.name / p.name)
            moved.append((p, output / p.parent.name / p.name))
        write_together(files)  # the configs and manifest that name the new version, or none of them
    except BaseException:
        for back, there in reversed(moved):  # no version folder the old configs do not describe
            os.replace(there, back)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _read_config(path: Path):
    pb, text_format = _pb()
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing (every model folder needs a config.pbtxt)") from None
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a Triton model configuration ({exc})") from exc


def check_repository(
    path: str | Path, names: set[str] | None = None, *, trust_modified: bool = False
) -> dict[str, object]:
    """Parses every model's config.pbtxt with Triton's ModelConfig and checks the repository would
    load: names match folders, each model has a numbered version folder with its files, batch
    settings are consistent, and every ensemble step maps tensors its model has, with the same
    type and shape on both sides. Then, unless ``trust_modified``, that its files are the ones
    written (check_files). Returns the configs by name; ModelFileError otherwise."""
    pb, _ = _pb()
    root = Path(path)
    if not root.is_dir():
        raise ModelFileError(f"{root}: not a folder (a Triton model repository is a folder of model folders)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name != PLUGIN_FOLDER and not p.name.startswith("."))
    if not folders:
        raise ModelFileError(f"{root}: no model folders (not a Triton model repository)")
    configs = {p.name: _read_config(p / "config.pbtxt") for p in folders}
    if names is not None and set(configs) != names:
        raise ModelFileError(f"{root}: expected the models {sorted(names)}, found {sorted(configs)}")
    for name, config in configs.items():
        where = root / name / "config.pbtxt"
        if config.name and config.name != name:
            raise ModelFileError(f"{where}: names the model '{config.name}' but its folder is '{name}'")
        versions = [p for p in (root / name).iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]
        if not versions:
            raise ModelFileError(f"{root / name}: no version folder (1/, 2/ ...)")
        newest = max(versions, key=lambda p: int(p.name))
        needed = {"python": "model.py"}.get(config.backend) or {"tensorrt_plan": "model.plan"}.get(config.platform)
        if needed and not (newest / needed).is_file():
            raise ModelFileError(f"{newest}: {needed} is missing")
        batching = config.dynamic_batching
        if config.HasField("dynamic_batching") and any(
            b > config.max_batch_size for b in batching.preferred_batch_size
        ):
            raise ModelFileError(f"{where}: a preferred batch size is larger than max_batch_size")
    for name, config in configs.items():
        if config.platform == "ensemble":
            _check_ensemble(root, name, config, configs, pb)
    if not trust_modified:
        check_files(root)
    return configs


def _read_manifest(root: Path) -> dict:
    """The manifest as a dict; ModelFileError saying how to go on when there is none to read."""
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(
            f"{root}: no {MANIFEST} (not written by 'handssca serve repository'), so its model and python steps "
            f"cannot be checked; {REWRITE}"
        ) from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ModelFileError(f"{path}: not a readable repository manifest ({exc}); {REWRITE}") from exc
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{path}: not a repository manifest (a JSON object); {REWRITE}")
    return manifest


def _served_files(root: Path) -> dict[str, Path]:
    """The files Triton loads or the python steps run and read: everything in the models' version
    folders and in plugins/ (Python's bytecode caches aside), by their path in ``root``. The
    configs are left out: tuning them by hand is allowed, and check_repository parses them."""
    found = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        in_version = len(parts) > 2 and parts[1].isdigit()
        if (in_version or parts[0] == PLUGIN_FOLDER) and "__pycache__" not in parts and path.is_file():
            found["/".join(parts)] = path
    return found


def check_files(root: str | Path) -> None:
    """The network's model file and the python steps' files (model.py, mano.npz), and the plugins,
    are those 'serve repository' wrote: the SHA-256 its manifest records for each, none missing
    and none added. ModelFileError naming the first file that differs, and how to go on."""
    root = Path(root)
    recorded = _read_manifest(root).get("files")
    if not isinstance(recorded, dict) or not recorded:
        raise ModelFileError(f"{root / MANIFEST}: records no file hashes (written by an older handssca); {REWRITE}")
    found = _served_files(root)
    for name, digest in recorded.items():
        if name not in found:
            raise ModelFileError(f"{root / name}: missing ({MANIFEST} records it); {REWRITE}")
        if sha256_file(found[name]) != digest:
            raise ModelFileError(
                f"{found[name]}: changed since 'handssca serve repository' wrote it (its SHA-256 is not the one "
                f"{MANIFEST} records); {REWRITE}"
            )
    added = sorted(set(found) - set(recorded))
    if added:
        raise ModelFileError(
            f"{found[added[0]]}: not written by 'handssca serve repository' (not in {MANIFEST}); {REWRITE}"
        )


def _earlier_files(output: Path) -> dict:
    """The hashes the manifest of a repository being added to records for its earlier versions
    (none from a missing, damaged or older manifest: check_files then names their files)."""
    try:
        files = _read_manifest(output).get("files")
    except ModelFileError:
        return {}
    return dict(files) if isinstance(files, dict) else {}


def _check_ensemble(root: Path, name: str, ensemble, configs: dict, pb) -> None:
    where = root / name / "config.pbtxt"
    produced = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for i, step in enumerate(ensemble.ensemble_scheduling.step):
        model = configs.get(step.model_name)
        if model is None:
            raise ModelFileError(f"{where}: step {i + 1} calls '{step.model_name}', which is not in {root}")
        if model.max_batch_size < ensemble.max_batch_size:
            raise ModelFileError(
                f"{where}: max_batch_size {ensemble.max_batch_size} is larger than {step.model_name}'s "
                f"{model.max_batch_size}"
            )
        model_inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        for key, source in step.input_map.items():
            if key not in model_inputs:
                raise ModelFileError(f"{where}: step {i + 1} feeds '{key}', which {step.model_name} has no input of")
            if source not in produced:
                raise ModelFileError(f"{where}: step {i + 1} reads '{source}' before any step makes it")
            if produced[source] != model_inputs[key]:
                raise ModelFileError(
                    f"{where}: '{source}' is {_describe(pb, produced[source])} but {step.model_name}'s input "
                    f"'{key}' is {_describe(pb, model_inputs[key])}"
                )
        unfed = set(model_inputs) - set(step.input_map)
        if unfed:
            raise ModelFileError(f"{where}: step {i + 1} leaves {step.model_name}'s inputs {sorted(unfed)} unfed")
        model_outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        for key, target in step.output_map.items():
            if key not in model_outputs:
                raise ModelFileError(f"{where}: step {i + 1} takes '{key}', which {step.model_name} does not output")
            produced[target] = model_outputs[key]
    for t in ensemble.output:
        if t.name not in produced:
            raise ModelFileError(f"{where}: no step makes the output '{t.name}'")
        if produced[t.name] != (t.data_type, list(t.dims)):
            raise ModelFileError(
                f"{where}: output '{t.name}' is declared {_describe(pb, (t.data_type, list(t.dims)))} but its step "
                f"makes {_describe(pb, produced[t.name])}"
            )


def _describe(pb, spec) -> str:
    return f"{pb.DataType.Name(spec[0])} {spec[1]}"
