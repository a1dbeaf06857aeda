"""MANO files, read safely and written atomically.

``load_mano`` reads the user's ``MANO_RIGHT.pkl``/``MANO_LEFT.pkl`` as downloaded (chumpy objects
and a scipy sparse matrix inside) with a restricted unpickler: chumpy and scipy.sparse classes
become plain arrays, numpy's array reconstruction is allowed, and every other global is refused,
so a malicious pickle raises instead of running code. ``.npz`` files with the same keys load
directly (no pickle), their headers checked before anything is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
from pathlib import Path

import numpy as np

from handssca.errors import InputError
from handssca.runtime.files import write_atomically
from handssca.runtime.mano.model import NUM_BETAS, NUM_HAND_POSE, NUM_JOINTS, NUM_POSE_BLEND, NUM_VERTICES, ManoModel

# ------------------------------------------------------------------------------------------------
# Restricted unpickling


class _ChumpyStandIn:
    """Takes the place of any chumpy class; keeps the pickled state to pull the array out."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_array(self, key: str) -> np.ndarray:
        value = self.state.get("x")
        if value is None:
            raise InputError(f"{key}: a chumpy expression, not a stored array (state keys {sorted(self.state)})")
        return np.asarray(_plain(value, key))


MAX_SPARSE_SIDE = 100_000  # rows or columns of a sparse matrix in a MANO file (it has 16 x 778)


class _SparseStandIn:
    """Takes the place of scipy.sparse matrices (MANO's J_regressor is csc); densified on load."""

    fmt = "csc"

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    def to_array(self, key: str) -> np.ndarray:
        s = self.state
        shape = s.get("_shape", s.get("shape"))
        fmt = self.fmt
        try:
            data, indices, indptr = (np.asarray(s[k]) for k in ("data", "indices", "indptr"))
            rows, cols = (int(v) for v in shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{key}: unreadable sparse matrix (state keys {sorted(s)})") from exc
        # Checked before allocating: a crafted file could claim any size (MANO's is 16 x 778).
        if not (0 < rows <= MAX_SPARSE_SIDE and 0 < cols <= MAX_SPARSE_SIDE):
            raise InputError(f"{key}: sparse matrix claims {rows} x {cols}, far more than a MANO file holds")
        outer, inner = (cols, rows) if fmt == "csc" else (rows, cols)
        if len(indptr) != outer + 1 or indptr[-1] != len(data) or len(indices) != len(data):
            raise InputError(f"{key}: inconsistent sparse matrix arrays")
        if len(indices) and (indices.min() < 0 or indices.max() >= inner or np.any(np.diff(indptr) < 0)):
            raise InputError(f"{key}: sparse matrix indices out of range")
        dense = np.zeros((rows, cols), dtype=np.float64)
        for j in range(outer):
            lo, hi = indptr[j], indptr[j + 1]
            if fmt == "csc":
                dense[indices[lo:hi], j] = data[lo:hi]
            else:
                dense[j, indices[lo:hi]] = data[lo:hi]
        return dense


class _CscStandIn(_SparseStandIn):
    fmt = "csc"


class _CsrStandIn(_SparseStandIn):
    fmt = "csr"


def _numpy_multiarray():
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        return importlib.import_module("numpy.core.multiarray")


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows numpy array reconstruction and stand-ins for chumpy and scipy.sparse; nothing else."""

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStandIn
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            return _CscStandIn if name == "csc_matrix" else _CsrStandIn
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(_numpy_multiarray(), name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            import copyreg

            return copyreg._reconstructor
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset"):
            return {"object": object, "set": set, "frozenset": frozenset}[name]  # chumpy keeps sets in its state
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles from Python 3 store bytes
            import codecs

            return codecs.encode
        raise _RefusedGlobal(f"refusing to load global '{module}.{name}'")


def _plain(value, key: str):
    if isinstance(value, (_ChumpyStandIn, _SparseStandIn)):
        return value.to_array(key)
    return value


def safe_unpickle(data: bytes):
    """Loads a pickle of numpy arrays and plain containers (as the MANO and HO3D files are);
    any other global raises InputError before anything runs. Python 2 pickles read
    as latin-1."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise InputError(str(exc)) from exc


def _read_pickle(path: Path) -> dict:
    data = path.read_bytes()
    try:
        obj = safe_unpickle(data)
    except InputError as exc:
        raise InputError(f"{path}: unsafe pickle, not loaded ({exc})") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise InputError(f"{path}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict of MANO arrays, found {type(obj).__name__}")
    return {str(k): _plain(v, str(k)) for k, v in obj.items()}


# What an .npz may declare before any of it is loaded: its .npy headers are read first (a few
# hundred bytes can declare an array of terabytes, which numpy would allocate to read it).
MAX_NPZ_ARRAY_BYTES = 64 << 20  # one array (MANO's largest, posedirs, is 2.5 MB)
MAX_NPZ_BYTES = 256 << 20  # all of a file's arrays together
# The shapes load_mano takes (None: any length there, within MAX_NPZ_ARRAY_BYTES).
MANO_NPZ_SHAPES = {
    "v_template": (NUM_VERTICES, 3), "shapedirs": (NUM_VERTICES, 3, None),
    "posedirs": (NUM_VERTICES, 3, NUM_POSE_BLEND), "J_regressor": (NUM_JOINTS, NUM_VERTICES),
    "weights": (NUM_VERTICES, NUM_JOINTS), "kintree_table": (2, NUM_JOINTS), "f": (None, 3),
    "hands_components": (NUM_HAND_POSE, NUM_HAND_POSE), "hands_mean": (NUM_HAND_POSE,),
}  # fmt: skip


def read_npz(path: Path, error=None, shapes: dict | None = None) -> dict:
    """The arrays of an .npz file, never unpickling; ``error`` (default InputError) naming the
    file when it is truncated, not an .npz archive, or holds objects. Every member's .npy header
    is read before anything is loaded: an array declaring more than MAX_NPZ_ARRAY_BYTES (or all
    of them more than MAX_NPZ_BYTES), an object array, or a key of ``shapes`` (key -> shape, None
    for any length) declaring another shape is refused, naming it and its declared shape."""
    import zipfile

    error = error or InputError
    try:
        with zipfile.ZipFile(path) as archive:
            _check_npz_headers(path, archive, error, shapes or {})
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except error:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        detail = "not a zip archive" if isinstance(exc, zipfile.BadZipFile) else f"{type(exc).__name__}: {exc}"
        raise error(f"{path}: truncated or not an .npz archive ({' '.join(detail.split())[:160]})") from exc


def _check_npz_headers(path: Path, archive, error, shapes: dict) -> None:
    import math
    import zipfile

    from numpy.lib import format as npy

    total = 0
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        if info.file_size > MAX_NPZ_ARRAY_BYTES + 65536:  # what the zip says it inflates to
            raise error(f"{path}: '{key[:80]}' inflates to {info.file_size} bytes, more than an array may have")
        try:
            with archive.open(info) as member:
                version = npy.read_magic(member)
                if version not in ((1, 0), (2, 0), (3, 0)):
                    raise ValueError(f".npy version {version[0]}.{version[1]}")
                # version 3 differs from 2 only in that field names may be UTF-8
                read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, _, dtype = read_header(member)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
            detail = " ".join(str(exc).split())[:120]
            raise error(f"{path}: '{key[:80]}' is not a readable .npy array ({detail})") from exc
        if dtype.hasobject:
            raise error(f"{path}: '{key[:80]}' holds object arrays (pickles), which are refused")
        size = math.prod(shape) * dtype.itemsize
        total += size
        if size > MAX_NPZ_ARRAY_BYTES:
            raise error(
                f"{path}: '{key[:80]}' declares shape {shape} {dtype} ({size} bytes, more than the "
                f"{MAX_NPZ_ARRAY_BYTES >> 20} MiB an array may have); not loaded"
            )
        expected = shapes.get(key)
        if expected is not None and (
            len(shape) != len(expected) or any(w not in (None, got) for w, got in zip(expected, shape, strict=True))
        ):
            wanted = str(tuple("N" if w is None else w for w in expected)).replace("'", "")
            raise error(f"{path}: '{key}' declares shape {shape}, expected {wanted}; not loaded")
    if total > MAX_NPZ_BYTES:
        limit = f"{MAX_NPZ_BYTES >> 20} MiB"
        raise error(f"{path}: its arrays declare {total} bytes together, more than {limit}; not loaded")


# ------------------------------------------------------------------------------------------------
# Validation


def _array(raw: dict, key: str, path: Path, shape: tuple, dtype=np.float64) -> np.ndarray:
    if key not in raw:
        raise InputError(f"{path}: missing key '{key}'")
    try:
        value = np.asarray(raw[key], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: '{key}' is not numeric ({exc})") from exc
    if value.shape != shape:
        raise InputError(f"{path}: '{key}' has shape {value.shape}, expected {shape}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise InputError(f"{path}: '{key}' holds NaN or infinite values")
    return value


def mano_from_arrays(raw: dict, path: str | Path = "<arrays>") -> ManoModel:
    """Checks shapes and the kinematic tree of MANO arrays (official key names)."""
    path = Path(path)
    v = _array(raw, "v_template", path, (NUM_VERTICES, 3))
    if "shapedirs" not in raw:
        raise InputError(f"{path}: missing key 'shapedirs'")
    shapedirs = np.asarray(raw["shapedirs"], dtype=np.float64)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (NUM_VERTICES, 3) or shapedirs.shape[2] < NUM_BETAS:
        raise InputError(f"{path}: 'shapedirs' has shape {shapedirs.shape}, expected ({NUM_VERTICES}, 3, {NUM_BETAS})")
    shapedirs = shapedirs[:, :, :NUM_BETAS]
    posedirs = _array(raw, "posedirs", path, (NUM_VERTICES, 3, NUM_POSE_BLEND))
    j_reg = _array(raw, "J_regressor", path, (NUM_JOINTS, NUM_VERTICES))
    weights = _array(raw, "weights", path, (NUM_VERTICES, NUM_JOINTS))
    kintree = _array(raw, "kintree_table", path, (2, NUM_JOINTS), dtype=np.int64)
    faces = np.asarray(raw.get("f", np.zeros((0, 3))), dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise InputError(f"{path}: 'f' has shape {faces.shape}, expected (F, 3) triangles")
    if faces.min() < 0 or faces.max() >= NUM_VERTICES:
        raise InputError(f"{path}: 'f' indexes vertices outside 0..{NUM_VERTICES - 1}")
    parents = kintree[0].copy()
    parents[0] = -1
    if not all(0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
        raise InputError(f"{path}: 'kintree_table' is not a tree rooted at joint 0 with parents before children")
    if not np.allclose(weights.sum(axis=1), 1.0, atol=1e-4):
        raise InputError(f"{path}: 'weights' rows do not sum to 1")
    if "hands_components" in raw:
        components = _array(raw, "hands_components", path, (NUM_HAND_POSE, NUM_HAND_POSE))
        mean = _array(raw, "hands_mean", path, (NUM_HAND_POSE,))
    else:  # an npz written without PCA data: axis-angle only, zero mean
        components = np.eye(NUM_HAND_POSE)
        mean = np.zeros(NUM_HAND_POSE)
    fingertip_ids = None
    if "fingertip_ids" in raw:
        fingertip_ids = tuple(int(i) for i in np.asarray(raw["fingertip_ids"]).reshape(-1))
        if len(fingertip_ids) != 5 or min(fingertip_ids) < 0 or max(fingertip_ids) >= NUM_VERTICES:
            raise InputError(f"{path}: 'fingertip_ids' must be 5 vertex ids, got {fingertip_ids}")
    note = str(np.asarray(raw["note"])) if "note" in raw else ""
    return ManoModel(
        v,
        shapedirs,
        posedirs,
        j_reg,
        weights,
        parents,
        faces,
        components,
        mean,
        source=str(path),
        fingertip_ids=fingertip_ids,
        note=note,
    )


def load_mano(path: str | Path) -> ManoModel:
    """A MANO model from the official ``.pkl`` (restricted unpickling) or an ``.npz`` with the same keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: MANO file not found (MANO_RIGHT.pkl / MANO_LEFT.pkl or a converted .npz)")
    raw = read_npz(path, shapes=MANO_NPZ_SHAPES) if path.suffix == ".npz" else _read_pickle(path)
    return mano_from_arrays(raw, path)


def save_mano_npz(model: ManoModel, out: str | Path, source_file: str | Path | None = None) -> Path:
    """Writes the model as .npz atomically; records the SHA-256 of ``source_file`` when given."""
    out = Path(out)
    arrays = dict(model.to_arrays())
    if model.fingertip_ids is not None:
        arrays["fingertip_ids"] = np.array(model.fingertip_ids, dtype=np.int64)
    if model.note:
        arrays["note"] = np.array(model.note)
    if source_file is not None:
        arrays["source_sha256"] = np.array(hashlib.sha256(Path(source_file).read_bytes()).hexdigest())
        arrays["source_name"] = np.array(Path(source_file).name)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomically(out, buffer.getvalue())
    return out


def convert_mano(source: str | Path, output: str | Path | None = None) -> str:
    """``handssca mano convert``: the official MANO_RIGHT.pkl / MANO_LEFT.pkl (or an .npz)
    validated and written as ``output`` (default: the source's name in lower case, .npz); the
    line that reports it."""
    out = Path(output or Path(source).with_suffix(".npz").name.lower())
    if out.suffix != ".npz":
        raise InputError(f"{out}: the output must be an .npz file")
    model = load_mano(source)
    save_mano_npz(model, out, source_file=source)
    return (
        f"wrote {out}: {len(model.v_template)} vertices, {len(model.parents)} joints, "
        f"{model.shapedirs.shape[2]} shape and {model.posedirs.shape[2]} pose blend shapes, {len(model.faces)} faces"
    )
