"""What the live outputs cost the camera loop: the webcam's headless FPS with ``--stream`` and
``--view`` and their clients, side by side with the plain run, in one run.

``run_webcam`` on a generated 640 x 480 video of the rendered hand (followed from its box, the tiny
network: the shipped checkpoint, exported), as fast as it goes, headless (writing its video and JSON
lines), in these set-ups, in turn, twice:
- ``plain``: no live output;
- ``stream``: ``--stream`` with two websocket clients reading every frame (one asked for vertices);
- ``stream, stuck client``: one client reading, one that asks for vertices and never reads (its
  socket takes 4 kB and its websockets client one message before it stops reading);
- ``view``: ``--view`` with no browser;
- ``view + browser``: ``--view`` with headless chromium showing the page on this same machine (its
  WebGL drawn in software, on the same two cores: a browser on another machine costs less).
The clients and the browser attach before the first frame (the source waits for them), and the
FPS is counted from the first frame read to the end of the video. Needs ``[dev]`` (Playwright) and Debian's
chromium for the browser set-up, ``[train]`` to export the network.

    python benchmarks/bench_live.py -o benchmarks/results/live
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import browser_page, wait_for  # noqa: E402  (the tests' chromium, through Playwright)

from handssca import progress  # noqa: E402
from handssca.measure import environment, write_json  # noqa: E402
from handssca.runtime.mano.builtin import build_builtin_hand  # noqa: E402
from handssca.runtime.webcam import WebcamOptions, run_webcam  # noqa: E402

WIDTH, HEIGHT = 640, 480
SETUPS = ("plain", "stream", "stream, stuck client", "view", "view + browser")


class TimedCapture:
    """The video's frames, the first only once ``ready`` is set; the time from the first read to the last."""

    fps = 30.0

    def __init__(self, frames, ready: threading.Event):
        self.frames, self.ready, self.index = frames, ready, 0
        self.first = self.last = None

    def read(self):
        if self.index == 0:
            self.ready.wait(120)
        now = time.perf_counter()
        self.first = now if self.first is None else self.first
        if self.index >= len(self.frames):
            self.last = now
            return False, None
        self.index += 1
        return True, self.frames[self.index - 1]

    def release(self):
        pass


def attach(setup: str, lines: list[str], ready: threading.Event, done: threading.Event) -> None:
    """The clients (or the browser) of ``setup``, once the run printed where it listens; sets ``ready``
    when they are attached and holds them until ``done``."""
    from websockets.sync.client import connect

    if setup == "plain":
        ready.set()
        return
    wait_for(lambda: len(lines) >= 1 or None, 60, 0.05)
    url = lines[0].split()[3]
    if setup.startswith("view"):
        if setup == "view":
            ready.set()
            return
        with browser_page() as page:
            page.goto(url)
            wait_for(lambda: "FPS" in page.inner_text("body") or None, 60)  # the page shows the frames
            ready.set()
            done.wait(300)
        return
    address = url.replace("http", "ws")
    clients = [connect(address)]
    clients[0].send(json.dumps({"vertices": True}))
    if setup.endswith("stuck client"):  # it asks for vertices, reads nothing, and its socket takes 4 kB
        host, port = address[5:].rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        clients.append(connect(address, sock=sock, max_queue=1))
        clients[1].send(json.dumps({"vertices": True}))
        readers = []
    else:
        clients.append(connect(address))
        readers = clients[1:]
    for client in [clients[0], *readers]:
        threading.Thread(target=lambda c=client: [None for _ in c], daemon=True).start()
    ready.set()
    done.wait(300)
    for client in clients:
        client.close()


def run(setup: str, predictor, frames, box, output: Path) -> dict:
    lines: list[str] = []
    progress.say = lines.append  # the lines the view and the stream say where they listen
    ready, done = threading.Event(), threading.Event()
    capture = TimedCapture(frames, ready)
    live = {"stream": "0" if setup.startswith("stream") else None, "view": "0" if setup.startswith("view") else None}
    options = WebcamOptions(box=box, find_hands=False, headless=True, output=output, **live)
    helper = threading.Thread(target=attach, args=(setup, lines, ready, done), daemon=True)
    helper.start()
    try:
        report = run_webcam(predictor, "video", options, lambda _: capture)
    finally:
        done.set()
        helper.join(30)
    fps = report.frames / (capture.last - capture.first)  # from the first frame read to the end
    return {"fps": fps, "frames": report.frames, "stage_ms": report.stage_ms, "live": report.live}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/live"))
    args = parser.parse_args(argv)
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:  # the clients connect straight
        del os.environ[name]

    from handssca.demo import SHIPPED_CHECKPOINT
    from handssca.export import export_onnx
    from handssca.runtime.predictor import PredictorOptions, open_predictor
    from handssca.training.checkpoint import load_network
    from handssca.training.synthetic import render_sequence

    env = environment(opencv=cv2.__version__)
    print(f"{env['cpu']} ({', '.join(env['cpu_features'])}), {env['cpu_count']} cores, {env['date']}")
    with tempfile.TemporaryDirectory() as tmp:
        print("exporting the shipped checkpoint (the tiny network) to ONNX ...", flush=True)
        model = str(Path(tmp) / "tiny.onnx")
        export_onnx(load_network(SHIPPED_CHECKPOINT)[0], model, validate=False)
        predictor = open_predictor(PredictorOptions(model=model), find_hands=False)
        frames, truth = render_sequence(*build_builtin_hand(), args.frames, width=WIDTH, height=HEIGHT, seed=1)
        box = tuple(truth[0]["box"] + [-8, -8, 8, 8])
        runs = {setup: [] for setup in SETUPS}
        for round_ in range(args.repeats):
            for number, setup in enumerate(SETUPS):
                row = run(setup, predictor, frames, box, Path(tmp) / f"run{round_}_{number}")
                runs[setup].append(row)
                print(f"  {setup}: {row['fps']:.1f} FPS", flush=True)
    report = {
        "environment": env,
        "video": f"render_sequence, {args.frames} frames, {WIDTH} x {HEIGHT}",
        "model": "the shipped checkpoint (the tiny network), exported",
        "setups": {
            setup: {"fps": float(np.median([r["fps"] for r in rows])), "runs": rows} for setup, rows in runs.items()
        },
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "live.json", report)
    plain = report["setups"]["plain"]["fps"]
    print(f"\n{'set-up':<22} {'FPS':>6} {'vs plain':>9}")
    for setup, row in report["setups"].items():
        print(f"{setup:<22} {row['fps']:>6.1f} {row['fps'] / plain:>8.2f}x")
    print(f"wrote {args.output / 'live.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
