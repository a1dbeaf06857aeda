"""Readers of the official raw data-set layouts: FreiHAND, HO3D (v2/v3) and DexYCB (s0).

Each yields ``HandRecord``s in ONE convention, whatever the source's: OpenCV camera frame,
metres, 21 joints in FreiHAND's order, MANO axis-angle pose relative to the mean hand
(flat_hand_mean=False, FreiHAND's). No torch, no images decoded here (``samples.HandCrops``
crops them). Annotation files are parsed with json / yaml.safe_load / numpy without pickles,
except HO3D's meta files, which go through the restricted unpickler (arrays and containers only).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handssca.errors import InputError, OptionError
from handssca.runtime.mano.conventions import dexycb_pose_to_axis_angle, opengl_to_opencv_mano, rest_root_joint
from handssca.runtime.mano.files import read_npz
from handssca.runtime.mano.model import MANO_TO_FREIHAND, ManoModel, mano_forward


@dataclass
class HandRecord:
    image_path: Path
    K: np.ndarray  # (3, 3) intrinsics of the full image
    joints_3d: np.ndarray | None = None  # (21, 3) metres, OpenCV camera, FreiHAND order
    vertices: np.ndarray | None = None  # (778, 3) metres, OpenCV camera
    pose: np.ndarray | None = None  # (48,) axis-angle, mean-hand relative, global rotation in the camera
    shape: np.ndarray | None = None  # (10,)
    box: np.ndarray | None = None  # (4,) x0, y0, x1, y1 pixels; None: from the projected joints
    side: str = "right"
    source: str = ""


def _read_json(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: missing (is the data set complete?)")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file (not UTF-8), so not JSON") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


@contextlib.contextmanager
def _contents(path: Path):
    """Reading an annotation file's fields: a missing key or a value of the wrong kind or shape is
    a InputError naming the file, not a KeyError or ValueError from deep inside."""
    try:
        yield
    except InputError:
        raise
    except KeyError as exc:
        raise InputError(f"{path}: missing field {exc}") from exc
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise InputError(
            f"{path}: unexpected contents ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc


def _numbers(path: Path, values, shape: tuple | None) -> np.ndarray:
    """``values`` as finite float64 of ``shape`` (-1: any length; None: any shape), or
    InputError naming ``path``."""
    with _contents(path):
        array = np.asarray(values, dtype=np.float64)
    if shape is not None and (
        array.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, array.shape, strict=True))
    ):
        wanted = "(" + ", ".join("N" if w == -1 else str(w) for w in shape) + ")"
        raise InputError(f"{path}: entries of shape {array.shape}, expected {wanted}")
    if not np.isfinite(array).all():
        raise InputError(f"{path}: holds NaN or infinite values")
    return array


def _read_yaml(path: Path):
    from .config import safe_yaml_load

    if not path.is_file():
        raise InputError(f"{path}: missing (is the data set complete?)")
    return safe_yaml_load(path.read_text(), str(path), InputError)  # no aliases: they can expand without bound


class FreiHAND:
    """FreiHAND_pub_v2 (and sets written by ``handssca data synth``).

    split "training": ``training_{K,mano,xyz,verts}.json`` with N entries and ``training/rgb``
    holding 4N images, sample i in background version k being image i + N k; ``versions``
    picks the backgrounds. split "evaluation": ``evaluation_K.json`` and, in the evaluation
    release, ``evaluation_{xyz,verts,mano}.json``.
    """

    def __init__(self, root: str | Path, split: str = "training", versions=(0, 1, 2, 3)):
        self.root, self.split = Path(root), split
        if split not in ("training", "evaluation"):
            raise InputError(f"FreiHAND split {split!r}: expected 'training' or 'evaluation'")
        if not self.root.is_dir():
            raise InputError(f"{self.root}: FreiHAND folder not found")
        K_path = self.root / f"{split}_K.json"
        self.K = _numbers(K_path, _read_json(K_path), (-1, 3, 3))
        n = len(self.K)
        optional = split == "evaluation"
        self.xyz = self._optional(f"{split}_xyz.json", n, optional, (-1, 21, 3))
        self.verts = self._optional(f"{split}_verts.json", n, optional, (-1, 778, 3))
        mano = self._optional(f"{split}_mano.json", n, optional, None)  # nested one level deeper in the release
        if mano is not None:
            mano = mano.reshape(n, -1)
            if mano.shape[1] < 58:
                raise InputError(f"{self.root / f'{split}_mano.json'}: {mano.shape[1]} values per entry, expected 61")
        self.mano = mano
        self.versions = tuple(versions) if split == "training" else (0,)
        self.count = n
        self.images = self.root / split / "rgb"
        if not self.images.is_dir():
            raise InputError(f"{self.images}: image folder missing for FreiHAND {split}")
        last = self.images / f"{n * (max(self.versions) + 1) - 1:08d}.jpg"
        if not last.is_file():
            found = len(list(self.images.glob("*.jpg")))
            raise InputError(
                f"{self.images}: {found} images for {n} annotations x {max(self.versions) + 1} versions "
                f"({last.name} is missing)"
            )
        self.name, self.skipped = f"FreiHAND {split}", 0

    def _optional(self, name: str, n: int, optional: bool, shape: tuple | None):
        path = self.root / name
        if optional and not path.is_file():
            return None
        raw = _read_json(path)
        if not isinstance(raw, list) or len(raw) != n:
            count = len(raw) if isinstance(raw, list) else f"not a list: {type(raw).__name__},"
            raise InputError(f"{path}: {count} entries, but {self.split}_K.json has {n}")
        return _numbers(path, raw, shape)

    def __len__(self) -> int:
        return self.count * len(self.versions)

    def __getitem__(self, index: int) -> HandRecord:
        if not 0 <= index < len(self):
            raise IndexError(index)
        version, i = self.versions[index // self.count], index % self.count
        image = self.count * version + i
        return HandRecord(
            image_path=self.images / f"{image:08d}.jpg",
            # Without ground truth (the public evaluation release), the 224 x 224 image is the crop.
            box=None if self.xyz is not None else np.array([0.0, 0.0, 224.0, 224.0]),
            K=self.K[i],
            joints_3d=None if self.xyz is None else self.xyz[i],
            vertices=None if self.verts is None else self.verts[i],
            pose=None if self.mano is None else self.mano[i, :48],
            shape=None if self.mano is None else self.mano[i, 48:58],
            source=f"{self.name} {i:08d} (background {version})",
        )


class HO3D:
    """HO3D v2 / v3: ``{train,evaluation}/<SEQ>/{rgb,meta}/<ID>``, listed in train.txt / evaluation.txt.

    Meta files are in an OpenGL camera with the pose relative to the flat hand; records are
    converted to OpenCV and to the mean-hand convention with ``mano``. Training frames without
    a hand annotation are skipped and counted; evaluation frames carry the root joint and the
    hand box only (the 3D ground truth is not public).
    """

    def __init__(self, root: str | Path, split: str = "train", mano: ManoModel | None = None, version: str = "v2"):
        self.root, self.split, self.version = Path(root), split, version
        if split not in ("train", "evaluation"):
            raise InputError(f"HO3D split {split!r}: expected 'train' or 'evaluation'")
        if mano is None:
            raise InputError("HO3D needs the MANO model to convert its annotations (mano=...)")
        self.mano = mano
        listing = self.root / f"{split}.txt"
        if not listing.is_file():
            raise InputError(f"{listing}: missing (is the HO3D {version} folder complete?)")
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        self.name = f"HO3D {version} {split}"
        self.records: list[HandRecord] = []
        self.skipped = 0
        for name in names:
            record = self._record(name)
            if record is None:
                self.skipped += 1
            else:
                self.records.append(record)

    def _record(self, name: str) -> HandRecord | None:
        from handssca.runtime.mano.files import safe_unpickle

        if name.count("/") != 1:
            raise InputError(f"{self.root / f'{self.split}.txt'}: line {name!r} is not SEQUENCE/FRAME")
        seq, frame = name.split("/")
        folder = self.root / self.split / seq
        meta_path = folder / "meta" / f"{frame}.pkl"
        if not meta_path.is_file():
            raise InputError(f"{meta_path}: missing meta file listed in {self.split}.txt")
        try:
            meta = safe_unpickle(meta_path.read_bytes())
        except InputError as exc:
            raise InputError(f"{meta_path}: unsafe pickle, not loaded ({exc})") from exc
        except Exception as exc:  # truncated pickles fail in many ways
            raise InputError(f"{meta_path}: unreadable meta file ({type(exc).__name__}: {exc})") from exc
        candidates = [folder / "rgb" / f"{frame}{ext}" for ext in (".jpg", ".png")]
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise InputError(f"{folder / 'rgb'}: no image for frame {frame}")
        with _contents(meta_path):
            return self._meta_record(meta, image, name)

    def _meta_record(self, meta: dict, image: Path, name: str) -> HandRecord | None:
        K = np.asarray(meta["camMat"], dtype=np.float64).reshape(3, 3)
        if self.split == "evaluation":
            box = meta.get("handBoundingBox")
            box = None if box is None else np.asarray(box, np.float64)
            return HandRecord(image, K, box=box, source=f"{self.name} {name}")
        if meta.get("handPose") is None or meta.get("handJoints3D") is None:
            return None
        pose = np.asarray(meta["handPose"], dtype=np.float64).reshape(48)
        shape = np.asarray(meta["handBeta"], dtype=np.float64).reshape(10)
        trans = np.asarray(meta["handTrans"], dtype=np.float64).reshape(3)
        root = rest_root_joint(self.mano, shape[None])
        global_cv, trans_cv = opengl_to_opencv_mano(pose[None, :3], trans[None], root)
        pose_cv = np.concatenate([global_cv[0], pose[3:] - self.mano.hands_mean])  # mean-hand relative
        joints = np.asarray(meta["handJoints3D"], dtype=np.float64).reshape(21, 3)[list(MANO_TO_FREIHAND)]
        joints = joints * np.array([1.0, -1.0, -1.0])
        vertices, _ = mano_forward(
            self.mano, pose_cv[None], shape[None], flat_hand_mean=False, fingertip_ids=(0,) * 5, trans=trans_cv
        )
        return HandRecord(image, K, joints, vertices[0], pose_cv, shape, source=f"{self.name} {name}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> HandRecord:
        return self.records[index]


DEXYCB_SUBJECTS = [
    "20200709-subject-01",
    "20200813-subject-02",
    "20200820-subject-03",
    "20200903-subject-04",
    "20200908-subject-05",
    "20200918-subject-06",
    "20200928-subject-07",
    "20201002-subject-08",
    "20201015-subject-09",
    "20201022-subject-10",
]
DEXYCB_SERIALS = [
    "836212060125",
    "839512060362",
    "840412060917",
    "841412060263",
    "932122060857",
    "932122060861",
    "932122061900",
    "932122062010",
]


def dexycb_s0_split(split: str) -> tuple[list[int], list[int]]:
    """(subject indices, sequence indices) of setup s0 (dex-ycb-toolkit's dex_ycb.py): every
    camera; train: all subjects, sequences i % 5 != 4; val: subjects 1-2, test: subjects 3-10,
    both sequences i % 5 == 4."""
    if split == "train":
        return list(range(10)), [i for i in range(100) if i % 5 != 4]
    if split == "val":
        return [0, 1], [i for i in range(100) if i % 5 == 4]
    if split == "test":
        return list(range(2, 10)), [i for i in range(100) if i % 5 == 4]
    raise InputError(f"DexYCB split {split!r}: expected train, val or test")


class DexYCB:
    """DexYCB setup s0, right hands (the paper's protocol); left-hand sequences are skipped
    and counted, as are frames whose hand is not annotated (joint_3d of -1)."""

    def __init__(self, root: str | Path, split: str = "train", mano: ManoModel | None = None, setup: str = "s0"):
        self.root, self.split = Path(root), split
        if setup != "s0":
            raise InputError(f"DexYCB setup {setup!r}: only s0 (the paper's) is implemented")
        if mano is None:
            raise InputError("DexYCB needs the MANO model to convert its PCA poses (mano=...)")
        self.mano = mano
        subjects, sequences = dexycb_s0_split(split)
        self.items: list[tuple[Path, Path, np.ndarray, np.ndarray]] = []  # image, labels, K, betas
        self.skipped_left = self.skipped = 0
        intrinsics: dict[str, np.ndarray] = {}
        for s in subjects:
            subject = self.root / DEXYCB_SUBJECTS[s]
            if not subject.is_dir():
                raise InputError(f"{subject}: subject folder missing for DexYCB {split}")
            names = sorted(p.name for p in subject.iterdir() if p.is_dir())
            for q in sequences:
                if q >= len(names):
                    continue  # the toolkit's indices run over each subject's sorted sequences
                sequence = subject / names[q]
                meta = _read_yaml(sequence / "meta.yml")
                with _contents(sequence / "meta.yml"):
                    side, calibration, frames = meta["mano_sides"][0], meta["mano_calib"][0], int(meta["num_frames"])
                if side != "right":
                    self.skipped_left += 1
                    continue
                calib_path = self.root / "calibration" / f"mano_{calibration}" / "mano.yml"
                with _contents(calib_path):
                    betas = _numbers(calib_path, _read_yaml(calib_path)["betas"], (10,))
                for serial in DEXYCB_SERIALS:
                    folder = sequence / serial
                    if not folder.is_dir():
                        continue
                    if serial not in intrinsics:
                        path = self.root / "calibration" / "intrinsics" / f"{serial}_640x480.yml"
                        with _contents(path):
                            intr = _read_yaml(path)["color"]
                            intrinsics[serial] = np.array(
                                [[intr["fx"], 0, intr["ppx"]], [0, intr["fy"], intr["ppy"]], [0, 0, 1.0]], np.float64
                            )
                    for f in range(frames):
                        self.items.append(
                            (folder / f"color_{f:06d}.jpg", folder / f"labels_{f:06d}.npz", intrinsics[serial], betas)
                        )
        self.name = f"DexYCB s0 {split}"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> HandRecord:
        image, labels_path, K, betas = self.items[index]
        if not labels_path.is_file():
            raise InputError(f"{labels_path}: missing label file")
        labels = read_npz(labels_path, InputError)
        with _contents(labels_path):
            joints = np.asarray(labels["joint_3d"], dtype=np.float64).reshape(21, 3)
            pose_m = np.asarray(labels["pose_m"], dtype=np.float64).reshape(1, 51)
        source = f"{self.name} {labels_path.parent.parent.name}/{labels_path.parent.name}/{labels_path.stem}"
        if np.all(joints == -1):  # the hand is not annotated in this frame
            return HandRecord(image, K, source=source + " (no hand annotation)")
        pose, trans = dexycb_pose_to_axis_angle(pose_m, self.mano)
        vertices, _ = mano_forward(
            self.mano, pose, betas[None], flat_hand_mean=False, fingertip_ids=(0,) * 5, trans=trans
        )
        return HandRecord(image, K, joints, vertices[0], pose[0], betas, source=source)


# What a run's config opens (training, evaluation, handssca eval).

DEFAULT_SPLITS = {
    "freihand": ("training", "evaluation"),
    "ho3d": ("train", None),  # HO3D's evaluation split has no public 3D ground truth
    "dexycb": ("train", "test"),
}


def load_mano_model(config: dict):
    """(ManoModel, fingertip ids, description) from the run's ``mano`` section."""
    from handssca.runtime.mano.load import load_hand_model

    source = config["mano"]["model"]
    if not source:
        raise OptionError("mano.model is not set: give the MANO_RIGHT.pkl (or 'builtin' for the stand-in hand)")
    return load_hand_model(source, config["mano"]["fingertips"])


def open_dataset(config: dict, split: str, mano):
    """The records of ``split`` of the run's data set (``data`` section), in its raw layout."""
    data = config["data"]
    name, root = data["dataset"], data["root"]
    if root is None:
        raise OptionError("data.root is not set: point it at the data set (or make one with 'handssca data synth')")
    if name == "freihand":
        return FreiHAND(root, split, versions=tuple(data["versions"]) if split == "training" else (0,))
    if name == "ho3d":
        return HO3D(root, split, mano=mano, version=data["ho3d_version"])
    if name == "dexycb":
        return DexYCB(root, split, mano=mano)
    raise OptionError(f"data.dataset {name!r}: expected freihand, ho3d or dexycb")


def detect_layout(root: str | Path) -> str:
    """Which official layout the folder ``root`` holds (freihand, ho3d or dexycb), by the files
    each one's loader reads first."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data set folder not found")
    if any((root / f"{split}_K.json").is_file() for split in ("training", "evaluation")):
        return "freihand"
    if any((root / f"{split}.txt").is_file() for split in ("train", "evaluation")):
        return "ho3d"
    if any((root / subject).is_dir() for subject in DEXYCB_SUBJECTS):
        return "dexycb"
    raise InputError(f"{root}: not a FreiHAND (training_K.json), HO3D (train.txt) or DexYCB (subject folders) layout")
