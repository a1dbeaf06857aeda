"""Every example in README.md and docs/ runs: the code blocks are taken out of the pages by
mktestdocs (``grab_code_blocks``), in page order, and run in one folder per page that holds what
the examples name (``hand.onnx``: the shipped checkpoint exported; ``photo.jpg``; ``video.mp4``;
``camera.yaml``). Python blocks run in one namespace per page, as a reader would type them; shell
commands run one by one with bash. A command that cannot finish in seconds on 2 cores, or needs
what CI has not (a camera, a GPU, FreiHAND, MANO's files), is listed in NOT_RUN with the reason
and where it is tested instead; any other example that stops working fails the suite."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from mktestdocs import grab_code_blocks

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# The start of a command (or of a Python block) that the docs test does not run -> why, and
# where it runs instead.
NOT_RUN = {
    "python3 -m venv": "the install itself: .ci/run does it in a fresh clone",
    "pip install": "the install itself: .ci/run does it",
    "pip wheel": "builds the deployment box: tests/test_wheel.py (slow) does it",
    "box/bin/handssca": "the deployment box: tests/test_wheel.py (slow)",
    "handssca webcam --source 0": "needs a camera",
    "handssca webcam --source video.mp4 --model hand.onnx --headless --view": "fixed ports: "
    "tests/test_live_webcam.py runs this command on free ports",
    "handssca bench": "minutes on 2 cores: tests/test_bench.py (slow) runs the command",
    "handssca serve": "Triton: tests/test_serving.py (slow) starts it",
    "docker run": "needs Docker and a GPU",
    "from handssca.serving import HandMeshClient": "needs a running Triton: tests/test_serving.py (slow)",
    "from websockets.sync.client import connect": "needs a running webcam --stream: tests/test_stream.py runs "
    "this client against a HandStream",
    "handssca export --checkpoint model.pt": "needs the user's checkpoint (model.pt); the Quick start's export runs",
    "handssca train": "needs FreiHAND and hours: tests/test_training.py trains the tiny network",
    "torchrun": "several GPUs: tests/test_ddp.py (slow) runs DDP on the CPU",
    "handssca eval --root /data": "needs FreiHAND and MANO's files: tests/test_training.py evaluates",
    "handssca build-engine": "needs TensorRT and a GPU: tests/test_tensorrt_runner.py builds and runs engines against "
    "a stand-in that keeps TensorRT's documented contract",
    "handssca data synth -o data/synthetic_demo": "minutes (768 renders): tests/test_synthetic_and_config.py",
    "handssca checkpoint slim runs/": "needs a training run: tests/test_checkpoint.py",
    "handssca eval --root data/synthetic_demo": "needs the synthetic run above",
}


def commands(block: str) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments and blanks left out."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def not_run(text: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if text.startswith(start)), None)


@pytest.fixture(scope="module")
def folder(demo_onnx, tmp_path_factory):
    """What the examples name, in a fresh folder."""
    from handssca.runtime.files import write_video
    from handssca.runtime.photos import photo_path, two_hands_sequence

    here = tmp_path_factory.mktemp("docs")
    shutil.copyfile(demo_onnx, here / "hand.onnx")
    shutil.copyfile(photo_path("hand_src"), here / "photo.jpg")
    write_video(here / "video.mp4", [f.image for f in two_hands_sequence(24)], 15.0)
    storage = cv2.FileStorage(str(here / "camera.yaml"), cv2.FILE_STORAGE_WRITE)
    storage.write("camera_matrix", np.array([[600.0, 0, 320], [0, 600, 180], [0, 0, 1]]))
    storage.release()
    return here


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_the_examples_of_a_page_run(page, folder):
    text = page.read_text()
    ran = 0
    namespace: dict = {}
    work = folder / page.stem
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(folder, work, ignore=lambda d, names: [n for n in names if (folder / n).is_dir()])
    for name in ("handssca", "configs"):  # README's commands run in the checkout, naming its files
        (work / name).symlink_to(ROOT / name)
    blocks = [("python", b) for b in grab_code_blocks(text, lang="python")]
    blocks += [("bash", b) for b in grab_code_blocks(text, lang="bash")]
    # in page order: each block's position on the page
    blocks.sort(key=lambda item: text.index(item[1].strip().splitlines()[0]))
    previous = os.getcwd()
    os.chdir(work)
    try:
        for lang, block in blocks:
            if lang == "python":
                if not_run(block.strip()):
                    continue
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(block, f"{page.name} example", "exec"), namespace)  # noqa: S102
                ran += 1
                continue
            for command in commands(block):
                if not_run(command):
                    continue
                path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # this environment's handssca
                run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300,
                                     env={**os.environ, "PATH": path})  # fmt: skip
                assert run.returncode == 0, f"{page.name}: `{command}` exited {run.returncode}: {run.stderr[-1500:]}"
                ran += 1
    finally:
        os.chdir(previous)
    print(f"{page.name}: {ran} examples ran")


def test_every_example_not_run_has_its_reason_on_a_page():
    """NOT_RUN lists nothing the pages no longer hold (a stale reason hides nothing)."""
    examples = []
    for page in PAGES:
        text = page.read_text()
        examples += [b.strip() for b in grab_code_blocks(text, lang="python")]
        examples += [c for b in grab_code_blocks(text, lang="bash") for c in commands(b)]
    for start in NOT_RUN:
        assert any(example.startswith(start) for example in examples), f"NOT_RUN[{start!r}] matches no example"
