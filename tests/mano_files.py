"""MANO-structured models and files in the official formats, made up for tests."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np

MANO_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])


def random_mano_arrays(rng) -> dict:
    """Arrays with MANO's shapes and structure (not a hand): valid tree, convex regressor, unit weights."""
    nv, nj = 778, 16
    v = rng.normal(scale=0.05, size=(nv, 3))
    regressor = rng.random((nj, nv)) ** 8
    regressor /= regressor.sum(1, keepdims=True)
    weights = rng.random((nv, nj)) ** 4
    weights /= weights.sum(1, keepdims=True)
    q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    return {
        "v_template": v,
        "shapedirs": rng.normal(scale=0.005, size=(nv, 3, 10)),
        "posedirs": rng.normal(scale=0.002, size=(nv, 3, 135)),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.stack([np.where(MANO_PARENTS < 0, 4294967295, MANO_PARENTS), np.arange(nj)]),
        "f": rng.integers(0, nv, size=(1538, 3)),
        "hands_components": q,
        "hands_mean": rng.normal(scale=0.2, size=45),
    }


def _stand_in_module(name: str, classes: dict) -> types.ModuleType:
    module = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__ = name, cls_name
        setattr(module, cls_name, cls)
    return module


def write_official_pickle(arrays: dict, path, sparse_shape=None) -> None:
    """Writes arrays the way MANO_RIGHT.pkl stores them: chumpy Ch objects (state {'x': array})
    and J_regressor as a scipy csc_matrix, protocol 2, without chumpy or scipy installed.
    ``sparse_shape``: the shape the sparse matrix claims (a crafted file's lie)."""

    class Ch:  # what chumpy's __getstate__ leaves in the state, sets and all
        def __init__(self, x):
            self.x = x
            self._dirty_vars = {"x"}
            self._itr = None
            self._make_dense = False
            self._make_sparse = False
            self._depends_on_deps = {}

    class csc_matrix:  # noqa: N801 - the class name pickle must record
        def __init__(self, dense):
            nz_cols = [np.nonzero(dense[:, j])[0] for j in range(dense.shape[1])]
            self.indices = np.concatenate(nz_cols).astype(np.int32)
            self.data = np.concatenate([dense[r, j] for j, r in enumerate(nz_cols)])
            self.indptr = np.concatenate([[0], np.cumsum([len(r) for r in nz_cols])]).astype(np.int32)
            self._shape = dense.shape
            self.maxprint = 50

    modules = {
        "chumpy": types.ModuleType("chumpy"),
        "scipy": types.ModuleType("scipy"),
        "scipy.sparse": types.ModuleType("scipy.sparse"),
        "chumpy.ch": _stand_in_module("chumpy.ch", {"Ch": Ch}),
        "scipy.sparse._csc": _stand_in_module("scipy.sparse._csc", {"csc_matrix": csc_matrix}),
    }
    saved = {k: sys.modules.get(k) for k in modules}
    sys.modules.update(modules)
    try:
        content = {k: Ch(v) if k in ("v_template", "shapedirs", "weights") else v for k, v in arrays.items()}
        content["J_regressor"] = csc_matrix(arrays["J_regressor"])
        if sparse_shape is not None:
            content["J_regressor"]._shape = sparse_shape
        content["bs_style"] = "lbs"
        path.write_bytes(pickle.dumps(content, protocol=2))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
