#!/usr/bin/env python3
"""The picture of docs/runtime.md's live view: the page of ``webcam --view`` in headless chromium.

    python tools/draw_live_view.py            # writes docs/live_view.png

The webcam runs the shipped demo network (exported first; needs ``[train]``) with the hand finder
on the photographs' video of two hands, paced like a camera (15 frames a second, looped), with
``--view`` on a free port; Playwright opens the page in Debian's chromium (``[dev]``), orbits a
little to the side, waits until both hands show and takes the screenshot.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tests")]

from browser import browser_page, screenshot, wait_for  # noqa: E402  (the tests' browser, Playwright + chromium)
from draw_output_figures import export_shipped  # noqa: E402
from paced_camera import PacedCamera  # noqa: E402

from handssca import progress  # noqa: E402
from handssca.runtime.photos import two_hands_sequence  # noqa: E402
from handssca.runtime.predictor import PredictorOptions, open_predictor  # noqa: E402
from handssca.runtime.webcam import WebcamOptions, run_webcam  # noqa: E402


def main() -> None:
    import cv2

    with tempfile.TemporaryDirectory() as folder:
        model = export_shipped(Path(folder))
        predictor = open_predictor(PredictorOptions(model=str(model)))
        frames = [f.image for f in two_hands_sequence(48)[:12]]  # both hands in view
        said: list[str] = []
        progress.say = said.append
        stop = threading.Event()
        camera = PacedCamera(frames, 15.0, stop)
        options = WebcamOptions(headless=True, view="0")
        run = threading.Thread(target=run_webcam, args=(predictor, "camera", options, lambda _: camera))
        run.start()
        try:
            if not wait_for(lambda: said or None, 60):
                raise SystemExit("the view did not start")
            url = said[0].split()[3]
            with browser_page(1000, 640) as page:
                page.goto(url)
                if not wait_for(lambda: "hands found" in page.inner_text("body") or None, 60):
                    raise SystemExit("the page never showed the HUD")

                def both_hands():
                    r, g, b = (c.astype(int) for c in np.moveaxis(screenshot(page), 2, 0))
                    right, left = ((b > r + 60) & (b > g + 30)).sum(), ((g > r + 50) & (g > b + 40)).sum()
                    return (right > 500 and left > 500) or None

                if not wait_for(both_hands, 60):
                    print("warning: both hands never showed at once; the screenshot shows what did")
                image = screenshot(page)
        finally:
            stop.set()
            run.join(60)
    path = ROOT / "docs" / "live_view.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
