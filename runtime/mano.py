"""MANO hand model without torch: safe loading of the official files, and forward kinematics.

Arrays (the official key names; shapes for MANO itself):
    v_template (778, 3)        shapedirs (778, 3, 10)     posedirs (778, 3, 135)
    J_regressor (16, 778)      weights (778, 16)          kintree_table (2, 16)
    f (1538, 3)                hands_components (45, 45)  hands_mean (45,)

``load_mano`` reads the user's ``MANO_RIGHT.pkl``/``MANO_LEFT.pkl`` as downloaded (chumpy objects
and a scipy sparse matrix inside) with a restricted unpickler: chumpy and scipy.sparse classes
become plain arrays, numpy's array reconstruction is allowed, and every other global is refused,
so a malicious pickle raises instead of running code. ``.npz`` files with the same keys load
directly (no pickle).

``mano_forward`` is MANO's linear blend skinning in numpy, batched, with smplx's conventions:
pose = 3 global + 45 finger axis-angle values added to the hand mean (unless flat_hand_mean).
It and the torch ``MANOGraph`` in ``handssca/models/mano.py`` (MANO inside exported ONNX graphs)
mirror each other step by step, with the same function names in the same order, modelled on smplx's
``lbs.py``: blend_shapes, vertices2joints, batch_rodrigues, pose_feature (pose blend shapes),
batch_rigid_transform, skinning. Read them side by side; a change to one belongs in both. This
module never imports torch.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HandSSCAError
from .files import write_atomically

NUM_VERTICES = 778
NUM_JOINTS = 16
NUM_BETAS = 10
NUM_POSE_BLEND = 9 * (NUM_JOINTS - 1)  # 135
NUM_HAND_POSE = 3 * (NUM_JOINTS - 1)  # 45

# Fingertip vertices (thumb, index, middle, ring, pinky); they differ by source.
FINGERTIP_IDS = {
    "smplx": (744, 320, 443, 554, 671),
    "manopth": (745, 317, 444, 556, 673),
}
# MANO's 16 joints + 5 tips (thumb, index, middle, ring, pinky) -> FreiHAND's 21-joint order:
# wrist, thumb 1-4, index 1-4, middle 1-4, ring 1-4, pinky 1-4 (each base to tip).
MANO_TO_FREIHAND = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
# The 21 joints' names in that order (the exported files' metadata "joint_order").
JOINT_ORDER = ["wrist"] + [
    f"{finger}_{i}" for finger in ("thumb", "index", "middle", "ring", "pinky") for i in range(1, 5)
]

REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class ManoFileError(HandSSCAError, ValueError):
    """A MANO file that is missing, unreadable, unsafe or has the wrong content."""


@dataclass(frozen=True)
class ManoModel:
    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray  # (16,), parents[0] == -1
    faces: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    source: str = ""
    # Set for models that define their own tips (the built-in hand); MANO files do not.
    fingertip_ids: tuple[int, ...] | None = None
    note: str = ""

    @property
    def kintree_table(self) -> np.ndarray:
        return np.stack([self.parents, np.arange(len(self.parents))]).astype(np.int64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The official key names, as ``save_mano_npz`` writes and smplx reads."""
        return {
            "v_template": self.v_template,
            "shapedirs": self.shapedirs,
            "posedirs": self.posedirs,
            "J_regressor": self.J_regressor,
            "weights": self.weights,
            "kintree_table": self.kintree_table,
            "f": self.faces,
            "hands_components": self.hands_components,
            "hands_mean": self.hands_mean,
        }


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
            raise ManoFileError(f"{key}: a chumpy expression, not a stored array (state keys {sorted(self.state)})")
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
            raise ManoFileError(f"{key}: unreadable sparse matrix (state keys {sorted(s)})") from exc
        # Checked before allocating: a crafted file could claim any size (MANO's is 16 x 778).
        if not (0 < rows <= MAX_SPARSE_SIDE and 0 < cols <= MAX_SPARSE_SIDE):
            raise ManoFileError(f"{key}: sparse matrix claims {rows} x {cols}, far more than a MANO file holds")
        outer, inner = (cols, rows) if fmt == "csc" else (rows, cols)
        if len(indptr) != outer + 1 or indptr[-1] != len(data) or len(indices) != len(data):
            raise ManoFileError(f"{key}: inconsistent sparse matrix arrays")
        if len(indices) and (indices.min() < 0 or indices.max() >= inner or np.any(np.diff(indptr) < 0)):
            raise ManoFileError(f"{key}: sparse matrix indices out of range")
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


class UnsafePickleError(HandSSCAError, pickle.UnpicklingError):
    """A pickle names a global outside the allowed numpy/container set: it was not loaded."""


def safe_unpickle(data: bytes):
    """Loads a pickle of numpy arrays and plain containers (as the MANO and HO3D files are);
    any other global raises UnsafePickleError before anything runs. Python 2 pickles read
    as latin-1."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise UnsafePickleError(str(exc)) from exc


def _read_pickle(path: Path) -> dict:
    data = path.read_bytes()
    try:
        obj = safe_unpickle(data)
    except UnsafePickleError as exc:
        raise ManoFileError(f"{path}: unsafe pickle, not loaded ({exc})") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ManoFileError(f"{path}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise ManoFileError(f"{path}: expected a dict of MANO arrays, found {type(obj).__name__}")
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
    """The arrays of an .npz file, never unpickling; ``error`` (default ManoFileError) naming the
    file when it is truncated, not an .npz archive, or holds objects. Every member's .npy header
    is read before anything is loaded: an array declaring more than MAX_NPZ_ARRAY_BYTES (or all
    of them more than MAX_NPZ_BYTES), an object array, or a key of ``shapes`` (key -> shape, None
    for any length) declaring another shape is refused, naming it and its declared shape."""
    import zipfile

    error = error or ManoFileError
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
        raise ManoFileError(f"{path}: missing key '{key}'")
    try:
        value = np.asarray(raw[key], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ManoFileError(f"{path}: '{key}' is not numeric ({exc})") from exc
    if value.shape != shape:
        raise ManoFileError(f"{path}: '{key}' has shape {value.shape}, expected {shape}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ManoFileError(f"{path}: '{key}' holds NaN or infinite values")
    return value


def mano_from_arrays(raw: dict, path: str | Path = "<arrays>") -> ManoModel:
    """Checks shapes and the kinematic tree of MANO arrays (official key names)."""
    path = Path(path)
    v = _array(raw, "v_template", path, (NUM_VERTICES, 3))
    if "shapedirs" not in raw:
        raise ManoFileError(f"{path}: missing key 'shapedirs'")
    shapedirs = np.asarray(raw["shapedirs"], dtype=np.float64)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (NUM_VERTICES, 3) or shapedirs.shape[2] < NUM_BETAS:
        raise ManoFileError(
            f"{path}: 'shapedirs' has shape {shapedirs.shape}, expected ({NUM_VERTICES}, 3, {NUM_BETAS})"
        )
    shapedirs = shapedirs[:, :, :NUM_BETAS]
    posedirs = _array(raw, "posedirs", path, (NUM_VERTICES, 3, NUM_POSE_BLEND))
    j_reg = _array(raw, "J_regressor", path, (NUM_JOINTS, NUM_VERTICES))
    weights = _array(raw, "weights", path, (NUM_VERTICES, NUM_JOINTS))
    kintree = _array(raw, "kintree_table", path, (2, NUM_JOINTS), dtype=np.int64)
    faces = np.asarray(raw.get("f", np.zeros((0, 3))), dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ManoFileError(f"{path}: 'f' has shape {faces.shape}, expected (F, 3) triangles")
    if faces.min() < 0 or faces.max() >= NUM_VERTICES:
        raise ManoFileError(f"{path}: 'f' indexes vertices outside 0..{NUM_VERTICES - 1}")
    parents = kintree[0].copy()
    parents[0] = -1
    if not all(0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
        raise ManoFileError(f"{path}: 'kintree_table' is not a tree rooted at joint 0 with parents before children")
    if not np.allclose(weights.sum(axis=1), 1.0, atol=1e-4):
        raise ManoFileError(f"{path}: 'weights' rows do not sum to 1")
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
            raise ManoFileError(f"{path}: 'fingertip_ids' must be 5 vertex ids, got {fingertip_ids}")
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
        raise ManoFileError(f"{path}: MANO file not found (MANO_RIGHT.pkl / MANO_LEFT.pkl or a converted .npz)")
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


# ------------------------------------------------------------------------------------------------
# Forward kinematics and skinning: smplx's lbs.py step by step (handssca/models/mano.py has the same
# steps in torch, with the same names). B: batch, V: vertices (778), J: joints (16), S: shape
# coefficients (10), P: pose blend shapes (9 * (J - 1) = 135).


def blend_shapes(coefficients: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """blend_shapes(betas (B, S), shapedirs (V, 3, S)) -> (B, V, 3) per-vertex offsets.

    The pose blend shapes use it too: (pose_feature (B, P), posedirs (V, 3, P)) -> (B, V, 3).
    """
    return np.einsum("bl,vcl->bvc", coefficients, directions)


def vertices2joints(J_regressor: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """vertices2joints(J_regressor (J, V), vertices (B, V, 3)) -> joints (B, J, 3)."""
    return np.einsum("jv,bvc->bjc", J_regressor, vertices)


def batch_rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """batch_rodrigues(axis_angle (..., 3)) -> rotation matrices (..., 3, 3).

    Adds smplx's 1e-8 to every component before taking the angle (so a zero rotation is finite
    and both implementations agree to rounding); results are accurate to about 1e-8 rad.
    """
    angle = np.linalg.norm(axis_angle + 1e-8, axis=-1, keepdims=True)
    axis = axis_angle / angle
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*axis.shape[:-1], 3, 3)
    eye = np.eye(3, dtype=axis_angle.dtype)
    return eye + sin * K + (1 - cos) * (K @ K)


# The name the rest of the code base imports.
rodrigues = batch_rodrigues


def pose_feature(rot_mats: np.ndarray) -> np.ndarray:
    """pose_feature(rot_mats (B, J, 3, 3)) -> (B, 9 * (J - 1)): R - I of the non-root joints, flattened."""
    return (rot_mats[:, 1:] - np.eye(3)).reshape(len(rot_mats), -1)


def transform_mat(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """transform_mat(R (..., 3, 3), t (..., 3)) -> (..., 4, 4) rigid transforms [[R, t], [0, 1]]."""
    extra_row = [(0, 0)] * (R.ndim - 2) + [(0, 1), (0, 0)]
    return np.concatenate([np.pad(R, extra_row), np.pad(t[..., None], extra_row, constant_values=1.0)], axis=-1)


def batch_rigid_transform(
    rot_mats: np.ndarray, joints: np.ndarray, parents: np.ndarray | list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """batch_rigid_transform(rot_mats (B, J, 3, 3), joints (B, J, 3), parents (J,), parents[0] == -1)
    -> posed_joints (B, J, 3), rel_transforms (B, J, 4, 4).

    Chains each joint's local transform (its rotation about its rest position, relative to its
    parent) from the root outwards. rel_transforms act on rest-pose points: x -> R (x - j_rest) + j_posed.
    """
    parents = [int(p) for p in parents]
    rel_joints = np.concatenate([joints[:, :1], joints[:, 1:] - joints[:, parents[1:]]], axis=1)
    local = transform_mat(rot_mats, rel_joints)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for j in range(1, len(parents)):
        chain.append(chain[parents[j]] @ local[:, j])
    transforms = np.stack(chain, axis=1)  # (B, J, 4, 4), world from joint
    posed_joints = transforms[:, :, :3, 3].copy()
    # Remove the rest-pose joint location, so the transforms act on rest-pose vertices.
    rest = (transforms[:, :, :3, :3] @ joints[..., None])[..., 0]  # (B, J, 3)
    rel_transforms = transforms.copy()
    rel_transforms[:, :, :3, 3] -= rest
    return posed_joints, rel_transforms


def skinning(v_posed: np.ndarray, weights: np.ndarray, rel_transforms: np.ndarray) -> np.ndarray:
    """skinning(v_posed (B, V, 3), weights W (V, J), rel_transforms A (B, J, 4, 4)) -> vertices (B, V, 3).

    Linear blend skinning: each vertex's transform T = W @ A, applied to the homogeneous vertex.
    """
    batch, num_joints = rel_transforms.shape[:2]
    T = (weights @ rel_transforms.reshape(batch, num_joints, 16)).reshape(batch, -1, 4, 4)  # (B, V, 4, 4)
    v_homo = np.concatenate([v_posed, np.ones_like(v_posed[..., :1])], axis=-1)  # (B, V, 4)
    return (T @ v_homo[..., None])[:, :, :3, 0]


def full_pose(model: ManoModel, pose: np.ndarray, *, flat_hand_mean: bool, pca: bool) -> np.ndarray:
    """full_pose(pose (B, 48) or with ``pca`` (B, 3 + k)) -> axis-angle of all joints (B, J, 3).

    MANO-specific, before lbs: PCA coefficients become axis-angle, and the file's mean hand is
    added to the fingers unless flat_hand_mean.
    """
    batch = pose.shape[0]
    if pca:
        k = pose.shape[1] - 3
        if not 1 <= k <= NUM_HAND_POSE:
            raise ValueError(f"mano_forward: PCA pose needs 3 + 1..45 values, got {pose.shape[1]}")
        fingers = pose[:, 3:] @ model.hands_components[:k]
    else:
        if pose.shape[1] != 3 + NUM_HAND_POSE:
            raise ValueError(f"mano_forward: axis-angle pose must have 48 values, got {pose.shape[1]}")
        fingers = pose[:, 3:]
    if not flat_hand_mean:
        fingers = fingers + model.hands_mean
    return np.concatenate([pose[:, :3], fingers], axis=1).reshape(batch, NUM_JOINTS, 3)


def mano_forward(
    model: ManoModel,
    pose: np.ndarray,
    shape: np.ndarray,
    *,
    flat_hand_mean: bool,
    fingertip_ids: tuple[int, ...],
    trans: np.ndarray | None = None,
    pca: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (B, 778, 3) and 21 joints in FreiHAND order (B, 21, 3), in the model's units (metres).

    pose: (B, 48) axis-angle (3 global + 45 fingers), or with ``pca`` (B, 3 + k) with k PCA
    coefficients of the finger pose. shape: (B, 10). trans: optional (B, 3).
    """
    pose = np.asarray(pose, dtype=np.float64)
    shape = np.asarray(shape, dtype=np.float64)
    if pose.ndim != 2 or shape.ndim != 2 or shape.shape != (pose.shape[0], NUM_BETAS):
        raise ValueError(f"mano_forward: pose (B, 48) and shape (B, 10) expected, got {pose.shape} and {shape.shape}")
    full = full_pose(model, pose, flat_hand_mean=flat_hand_mean, pca=pca)  # (B, 16, 3)

    # smplx's lbs
    v_shaped = model.v_template + blend_shapes(shape, model.shapedirs)  # (B, 778, 3)
    joints = vertices2joints(model.J_regressor, v_shaped)  # (B, 16, 3)
    rot_mats = batch_rodrigues(full)  # (B, 16, 3, 3)
    v_posed = v_shaped + blend_shapes(pose_feature(rot_mats), model.posedirs)  # (B, 778, 3)
    posed_joints, rel_transforms = batch_rigid_transform(rot_mats, joints, model.parents)
    verts = skinning(v_posed, model.weights, rel_transforms)  # (B, 778, 3)

    # MANO's outputs: fingertips, FreiHAND joint order, translation
    joints21 = np.concatenate([posed_joints, verts[:, list(fingertip_ids)]], axis=1)[:, list(MANO_TO_FREIHAND)]
    if trans is not None:
        trans = np.asarray(trans, dtype=np.float64).reshape(len(pose), 1, 3)
        verts = verts + trans
        joints21 = joints21 + trans
    return verts, joints21


def convert_mano(source: str | Path, output: str | Path | None = None) -> str:
    """``handssca mano convert``: the official MANO_RIGHT.pkl / MANO_LEFT.pkl (or an .npz)
    validated and written as ``output`` (default: the source's name in lower case, .npz); the
    line that reports it."""
    out = Path(output or Path(source).with_suffix(".npz").name.lower())
    if out.suffix != ".npz":
        raise ManoFileError(f"{out}: the output must be an .npz file")
    model = load_mano(source)
    save_mano_npz(model, out, source_file=source)
    return (
        f"wrote {out}: {len(model.v_template)} vertices, {len(model.parents)} joints, "
        f"{model.shapedirs.shape[2]} shape and {model.posedirs.shape[2]} pose blend shapes, {len(model.faces)} faces"
    )
