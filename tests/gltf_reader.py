"""Reads a .glb as another program would: pygltflib's loader (a reader we did not write), the
accessors decoded, the animation evaluated (linear, slerp, step) and the skin posed here, from the
file's data alone. The glTF tests and the webcam's --record tests use it."""

from __future__ import annotations

import numpy as np
from pygltflib import GLTF2

from handssca.runtime.mano.model import JOINT_ORDER

F = np.array([1.0, -1.0, -1.0])  # OpenCV camera <-> glTF axes


class Reader:
    def __init__(self, path):
        self.gltf = GLTF2().load_binary(str(path))
        self.blob = self.gltf.binary_blob()
        self.names = {node.name: i for i, node in enumerate(self.gltf.nodes)}
        self.parent = {c: i for i, node in enumerate(self.gltf.nodes) for c in node.children}

    def array(self, index: int) -> np.ndarray:
        accessor = self.gltf.accessors[index]
        view = self.gltf.bufferViews[accessor.bufferView]
        dtype = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[accessor.componentType]
        width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[accessor.type]
        assert view.byteStride in (None, width * np.dtype(dtype).itemsize)
        start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
        data = np.frombuffer(self.blob, dtype, accessor.count * width, start).reshape(accessor.count, width)
        return data[:, 0] if width == 1 else data

    def sample(self, channel, t: float) -> np.ndarray:
        sampler = self.gltf.animations[0].samplers[channel.sampler]
        keys, values = self.array(sampler.input).astype(np.float64), self.array(sampler.output).astype(np.float64)
        i = int(np.searchsorted(keys, t, side="right")) - 1
        if i < 0:
            return values[0]
        if sampler.interpolation == "STEP" or i == len(keys) - 1:
            return values[i]
        alpha = (t - keys[i]) / (keys[i + 1] - keys[i])
        a, b = values[i], values[i + 1]
        if channel.target.path != "rotation":
            return (1 - alpha) * a + alpha * b
        b = -b if a @ b < 0 else b  # slerp, the shorter way
        angle = np.arccos(np.clip(a @ b, -1, 1))
        if angle < 1e-9:
            return a
        return (np.sin((1 - alpha) * angle) * a + np.sin(alpha * angle) * b) / np.sin(angle)

    def trs_at(self, t: float) -> list[dict]:
        """Every node's translation, rotation and scale at animation time ``t``."""
        rest = [(n.translation or [0, 0, 0], n.rotation or [0, 0, 0, 1], n.scale or [1, 1, 1]) for n in self.gltf.nodes]
        trs = [{"translation": t, "rotation": r, "scale": s} for t, r, s in rest]
        for channel in self.gltf.animations[0].channels if self.gltf.animations else []:
            trs[channel.target.node][channel.target.path] = self.sample(channel, t)
        return trs

    def locals_at(self, t: float) -> list[np.ndarray]:
        """Every node's local matrix T * R * S at animation time ``t``."""
        out = []
        for node in self.trs_at(t):
            m = np.eye(4)
            m[:3, :3] = quaternion_matrix(np.asarray(node["rotation"], np.float64)) * np.asarray(node["scale"])
            m[:3, 3] = node["translation"]
            out.append(m)
        return out

    def worlds_at(self, t: float) -> list[np.ndarray]:
        local = self.locals_at(t)
        worlds = [None] * len(local)

        def world(i):
            if worlds[i] is None:
                worlds[i] = local[i] if i not in self.parent else world(self.parent[i]) @ local[i]
            return worlds[i]

        return [world(i) for i in range(len(local))]

    def primitive(self, mesh_name: str):
        mesh = next(m for m in self.gltf.meshes if m.name == mesh_name)
        return mesh.primitives[0]

    def skinned(self, node_name: str, t: float) -> np.ndarray:
        """The skinned mesh's vertices at ``t``: sum_i w_i (world_i @ inverseBind_i) v."""
        node = self.gltf.nodes[self.names[node_name]]
        skin, primitive = self.gltf.skins[node.skin], self.gltf.meshes[node.mesh].primitives[0]
        worlds = self.worlds_at(t)
        inverse_bind = self.array(skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64)
        joint_matrices = np.stack([worlds[j] for j in skin.joints]) @ inverse_bind
        rest = self.array(primitive.attributes.POSITION).astype(np.float64)
        rest = np.concatenate([rest, np.ones((len(rest), 1))], axis=1)
        transform = np.zeros((len(rest), 4, 4))
        for s in range(4):
            joints_index = getattr(primitive.attributes, f"JOINTS_{s}", None)
            if joints_index is None:
                break
            joints = self.array(joints_index)
            weights = self.array(getattr(primitive.attributes, f"WEIGHTS_{s}")).astype(np.float64)
            transform += np.einsum("vc,vcij->vij", weights, joint_matrices[joints])
        return (transform @ rest[..., None])[:, :3, 0]


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def joint_positions(reader: Reader, worlds, name: str, wrist: str = "") -> np.ndarray:
    """The 21 joints (FreiHAND's order) below node ``name``, back in OpenCV's camera axes; a
    track's wrist is the track node itself (``wrist`` ""), a scene's a child ``_wrist``."""
    ids = [reader.names[f"{name}{wrist}"]] + [reader.names[f"{name}_{joint}"] for joint in JOINT_ORDER[1:]]
    return np.stack([worlds[i][:3, 3] for i in ids]) * F


def root_scale(reader: Reader, t: float, name: str) -> float:
    """The (uniform) scale of track node ``name`` at ``t``: 0 hides the hand."""
    scale = np.asarray(reader.trs_at(t)[reader.names[name]]["scale"], np.float64)
    assert np.all(scale == scale[0])
    return float(scale[0])
