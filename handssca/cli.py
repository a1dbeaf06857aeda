"""The ``handssca`` command: parsing only. Each subcommand's handler is one call into the layer
that owns the work (``handssca.dispatch``), which returns what is printed; every user-facing
failure is a ``HandSSCAError`` (one line, exit status 1). No option default is typed here: each
comes from its owner's dataclass or function (tests/test_cli.py checks them all)."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from pathlib import Path

from handssca import __version__
from handssca.dispatch import (
    OWNERS,
    OwnerDefaultsFormatter,
    adopt_defaults,
    arguments_of,
    call,
    chosen_parsers,
    fields_of,
    require_torch,
    show,
)
from handssca.errors import HandSSCAError, interrupted_import, one_line
from handssca.export.options import INT8_FORMATS, PRECISIONS, SCAN_VARIANTS
from handssca.extras import missing_extra
from handssca.models.config import ATTENTION_KINDS
from handssca.runtime.camera import parse_intrinsics
from handssca.runtime.hands.finder import VARIANTS as HAND_VARIANTS
from handssca.runtime.mano.builtin import STAND_IN_NOTE as STAND_IN
from handssca.runtime.mano.model import FINGERTIP_IDS
from handssca.runtime.predictor import SIDES
from handssca.training.datasets import DEFAULT_SPLITS

# ---- argparse types ---------------------------------------------------------------------------


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (argparse then names the option in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


def batch_list(text: str) -> tuple[int, ...]:
    """--batches 1,2,4 -> (1, 2, 4), each a whole number >= 1."""
    return tuple(at_least(1)(part) for part in text.split(","))


def parse_box(text: str) -> tuple[float, float, float, float]:
    """--box x0,y0,x1,y1 -> a tuple of finite pixels with x0 < x1 and y0 < y1."""
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or not (box[2] > box[0] and box[3] > box[1]):
        raise argparse.ArgumentTypeError(f"{text!r}: expected finite x0,y0,x1,y1 with x0 < x1 and y0 < y1")
    return box


# ---- handlers that need more than one call ----------------------------------------------------


def cmd_info(args):
    require_torch("info")
    from handssca.models import format_model_report, model_report
    from handssca.training.config import load_model_config

    config = load_model_config(args.config, {"attention": args.attention, "input_size": args.input_size})
    report = model_report(config, args.batch, args.imagenet_weights)
    return show(json.dumps(report, indent=2) if args.json else format_model_report(report))


def cmd_doctor(args):
    from handssca.doctor import doctor_report

    text, broken = doctor_report(args.json)
    print(text)
    return 1 if broken else 0


def predictor_for(args, find_hands: bool):
    from handssca.runtime.predictor import PredictorOptions, open_predictor

    if args.checkpoint:
        require_torch("--checkpoint")
    return open_predictor(fields_of(PredictorOptions, args), find_hands)


def cmd_webcam(args):
    from handssca.runtime.webcam import WebcamOptions, run_webcam

    options = fields_of(WebcamOptions, args)
    report = run_webcam(predictor_for(args, options.find_hands), args.source, options)
    print("\n".join(report.summary_lines()))
    return report.exit_status(args.source)


def cmd_infer(args):
    from handssca.runtime.infer import infer_images

    predictor = predictor_for(args, args.box is None)
    report = infer_images(predictor, args.images, **arguments_of(infer_images, args, "predictor", "items"))
    return show(report.summary_lines())


def cmd_serve_check(args):
    from handssca.serving.repository import check_repository

    configs = check_repository(args.repository, trust_modified=args.trust_modified)
    return show(f"{args.repository}: {len(configs)} models, every config.pbtxt parses and the ensemble's tensors agree")


# ---- the parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handssca", description="HandSSCA: train, export, and run a 3D hand mesh.")
    parser.add_argument("--version", action="version", version=f"handssca {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    parser.set_defaults(commands=sorted(sub.choices))
    return parser


SERVING_OPTIONS = "handssca.serving.repository:ServingOptions"


# ---- the parts of the commands' parsers ------------------------------------------------------


def command(group, name, handler, help, *owners):
    """Registers the command ``name`` in ``group`` with its handler and owners (the dataclasses and
    functions whose fields and parameters its options are); returns its ``add_argument``."""
    p = group.add_parser(name, help=help, formatter_class=OwnerDefaultsFormatter)
    p.set_defaults(handler=handler)
    setattr(p, OWNERS, (*getattr(handler, "owners", ()), *owners))
    return p.add_argument


def network_options(add, attention=True):
    """The network's options (a config file, the attention, the input size)."""
    add("--config", help="YAML file with a 'model:' section (configs/model/)")
    if attention:
        add("--attention", choices=ATTENTION_KINDS, help="the paper's ablation (default ssca)")
    add("--input-size", type=int, help="crop size in pixels (multiple of 128; default 256)")


def predictor_options(add):
    """What a predictor is opened from, and the hand finder's options (webcam, infer)."""
    add("--model", help="an exported .onnx (ONNX Runtime) or .engine (TensorRT)")
    add("--checkpoint", help="a training checkpoint (runs in PyTorch)")
    add("--mano", help="MANO .pkl/.npz, or builtin (the stand-in hand)")
    add("--plugin", help="TensorRT plugin library (for .engine models)")
    add("--box", type=parse_box, help="a hand box x0,y0,x1,y1 in pixels (default: the hand finder finds the hands)")
    add("--side", choices=SIDES, help="the --box hand's side (default: right; a left hand needs --side left)")
    add("--max-hands", type=at_least(1), help="hands to find")
    add("--hand-models", metavar="DIR", help="the finder's ONNX models (default: the shipped ones)")
    add("--hand-variant", choices=HAND_VARIANTS, help="the finder's models")
    add("--mirror", action="store_true", help="mirrored frames (a selfie camera): sides swap")


def camera_options(add):
    """The camera's intrinsics (webcam, infer); without them they are guessed, and outputs say so."""
    add("--intrinsics", type=parse_intrinsics, metavar="FX,FY,CX,CY", help="the camera's intrinsics in pixels")
    add("--calibration", type=Path, metavar="FILE", help="the YAML/JSON OpenCV's calibration wrote (distortion undone)")


def scheduling_options(add):
    """A Triton repository's scheduling options (serve repository, serve load-test)."""
    add("--max-batch", type=at_least(1), help="max_batch_size of every model")
    add("--preferred-batch", type=at_least(1), help="the network's preferred batch")
    add("--queue-delay-us", type=at_least(0), help="dynamic batching queue delay")
    add("--no-dynamic-batching", dest="dynamic_batching", action="store_false", help="each request on its own")
    add("--instances", type=at_least(1), help="instances of the network model")
    add("--version", type=at_least(1), help="the version folder to write")
    add("--threads", type=at_least(0), help="ONNX Runtime threads per instance (0: all)")
    add("--mano", help="MANO .pkl/.npz for the mesh model (default: the built-in stand-in hand)")


# ---- one function per command -----------------------------------------------------------------


def info_command(sub) -> None:
    """handssca info"""
    add = command(sub, "info", cmd_info, "model summary: parameters, scan implementation, a forward pass",
                  "handssca.models.summary:model_report")  # fmt: skip
    network_options(add)
    add("--imagenet-weights", metavar="PTH", help="torchvision resnet50-*.pth to load into the backbone")
    add("--batch", type=at_least(1), help="batch size of the timed forward pass")
    add("--json", action="store_true", help="print the summary as JSON")


def doctor_command(sub) -> None:
    """handssca doctor"""
    add = command(sub, "doctor", cmd_doctor, "what this machine can run: kernels, runtimes, GPU, TensorRT plugin")
    add("--json", action="store_true", help="print the findings as JSON")


def export_command(sub) -> None:
    """handssca export"""
    export = call(
        "handssca.export.pipeline:run_export", needs_torch="export", options="handssca.export.options:ExportOptions",
        start="export: loading PyTorch and the network ...",
    )  # fmt: skip
    add = command(sub, "export", export, "export the network to ONNX (one custom node per selective scan)")
    add("-o", "--output", help="the .onnx (and a .json sidecar)")
    add("--checkpoint", metavar="PT", help="trained weights (default: the untrained network)")
    network_options(add)
    add("--batch", type=at_least(1), help="fixed batch size (default: dynamic)")
    add("--opset", type=int, help="ONNX opset to write")
    add("--precision", choices=PRECISIONS, help="fp16: for TensorRT; int8: convolutions")
    add("--calibration", metavar="DATA", help="int8: a data set folder (any layout) or synth")
    add("--calibration-images", type=at_least(1), metavar="N", help="int8: calibration images")
    add("--int8-format", choices=INT8_FORMATS, help="s8s8: TensorRT's Q/DQ")
    add("--scan", choices=SCAN_VARIANTS, help="portable: standard ONNX ops only")
    add("--seed", type=int, help="seed of the untrained weights")
    add("--no-validate", dest="validate", action="store_false", help="skip the ONNX Runtime vs PyTorch comparison")
    add("--tolerance", type=float, help="largest |ORT - PyTorch| accepted (default 1e-4 fp32, 5e-2 fp16)")
    add("--with-mano", dest="mano", nargs="?", const="builtin", metavar="PATH", help="MANO in the graph")
    add("--flat-hand-mean", action="store_true", help="pose relative to the flat hand, not the mean")
    add("--fingertips", choices=sorted(FINGERTIP_IDS), help="MANO fingertip ids")


def build_engine_command(sub) -> None:
    """handssca build-engine"""
    engine = call("handssca.runtime.backends.engine_build:build_engine")
    add = command(sub, "build-engine", engine, "build a TensorRT engine from an exported ONNX file (GPU)")
    add("onnx_path", metavar="onnx", help="the .onnx from 'handssca export' (an fp16 export for an fp16 engine)")
    add("-o", "--output", dest="engine_path", help="the engine to write (default: the ONNX name with .engine)")
    add("--plugin", metavar="SO", help="the scan plugin library (default: $HANDSSCA_TRT_PLUGIN)")
    add("--min-batch", type=at_least(1), help="smallest batch of the profile")
    add("--opt-batch", type=at_least(1), help="batch TensorRT tunes for")
    add("--max-batch", type=at_least(1), help="largest batch of the profile")
    add("--workspace", dest="workspace_mib", type=at_least(1), metavar="MIB", help="workspace limit in MiB")
    add("--timing-cache", metavar="FILE", help="timing cache to reuse and update")


def data_command(sub) -> None:
    """handssca data synth"""
    data = sub.add_parser("data", help="data sets: make a synthetic one")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    synth = call("handssca.training.synthetic:synthesize", options="handssca.training.synthetic:SynthOptions")
    add = command(data_sub, "synth", synth, "render a synthetic hand data set in FreiHAND's layout")
    add("-o", "--output", help="folder to write")
    add("--train", type=at_least(0), help="training hands (each in 4 backgrounds)")
    add("--evaluation", type=at_least(0), help="evaluation hands")
    add("--occluders", dest="occluder_probability", type=float, help="probability of occluding shapes per image")
    add("--finger-pose-std", type=float, help="radians per finger pose component")
    add("--roll", dest="roll_deg", type=float, help="in-plane rotation range, +- degrees")
    add("--tilt", dest="tilt_std", type=float, help="out-of-plane tilt, std in radians")
    add("--back", dest="back_probability", type=float, help="probability that the back of the hand faces the camera")
    add("--mano", metavar="PATH", help="MANO .pkl/.npz (default: the built-in stand-in hand)")
    add("--fingertips", choices=sorted(FINGERTIP_IDS), help="MANO fingertip ids")
    add("--seed", type=int, help="seed of the random hands")


def train_command(sub) -> None:
    """handssca train"""
    add = command(
        sub, "train", call("handssca.training.trainer:train", needs_torch="train"), "train from a YAML config"
    )
    add("--config", dest="config_path", help="YAML run config (configs/train/; default: the paper's FreiHAND recipe)")
    add("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="e.g. train.epochs=5")
    add("--resume", metavar="PT", help="continue a run from its last.pt")
    add("--auto-resume", action="store_true", help="continue from train.out/last.pt when it exists")


def checkpoint_command(sub) -> None:
    """handssca checkpoint slim"""
    checkpoint = sub.add_parser("checkpoint", help="training checkpoints: slim one down for shipping")
    checkpoint_sub = checkpoint.add_subparsers(dest="checkpoint_command", required=True)
    slim = call("handssca.training.checkpoint:slim_checkpoint", needs_torch="checkpoint slim")
    add = command(checkpoint_sub, "slim", slim, "weights + model config only (no optimizer state)")
    add("source", metavar="checkpoint", help="a training checkpoint (last.pt / best.pt)")
    add("-o", "--output", dest="destination", required=True, help="the weight-only checkpoint to write")


def eval_command(sub) -> None:
    """handssca eval"""
    evaluate = call("handssca.training.evaluate:run_evaluation")
    add = command(sub, "eval", evaluate, "official metrics of a checkpoint / ONNX / engine on a data set")
    add("--dataset", choices=sorted(DEFAULT_SPLITS), help="the data set's layout")
    add("--root", required=True, help="the data set's folder (or a synthetic set)")
    add("--split", help="default: evaluation (FreiHAND), test (DexYCB)")
    add("--checkpoint", help="a training checkpoint (PyTorch)")
    add("--onnx", action="append", help="an exported .onnx (repeatable)")
    add("--engine", dest="engines", action="append", help="a TensorRT engine (repeatable)")
    add("--plugin", help="the TensorRT plugin library for --engine")
    add("--mano", help="MANO .pkl/.npz, or builtin (the stand-in hand)")
    add("--mean-hand", action="store_true", help="also score the training split's mean hand")
    add("--samples", type=at_least(0), help="evaluate the first N samples (0: all)")
    add("--batch", dest="batch_size", type=at_least(1))
    add("-o", "--output", help="results JSON")
    add("--submission", help="also write the official pred.json (FreiHAND or HO3D format)")


def webcam_command(sub) -> None:
    """handssca webcam"""
    add = command(sub, "webcam", cmd_webcam, "live hand meshes: camera index, video, image folder or stream URL",
                  "handssca.runtime.predictor:PredictorOptions", "handssca.runtime.webcam:WebcamOptions",
                  "handssca.runtime.webcam:run_webcam")  # fmt: skip
    add("--source", help="camera index, video file, image folder or URL")
    predictor_options(add)
    camera_options(add)
    add("--record", action="append", type=Path, metavar="FILE", help="the hands' animation: .glb, .bvh (repeatable)")
    add("--headless", action="store_true", help="no window: write the video and JSON to -o")
    add("-o", "--output", type=Path, help="folder for annotated.mp4, frames.jsonl, summary.json")
    add("--save-meshes", action="store_true", help="also write one .obj per frame")
    add("--no-smooth", dest="smooth", action="store_false", help="turn the One Euro smoothing off")
    add("--max-frames", type=at_least(0), help="stop after N frames (0: when the source ends)")
    add("--duration", dest="duration_s", type=float, metavar="S", help="stop after S seconds (0: no limit)")
    add("--min-confidence", type=float, help="drop a hand below this confidence")
    add("--verify-every", type=at_least(0), metavar="N", help="frames between the landmark model's checks (0: never)")
    add("--no-finder", dest="find_hands", action="store_false", help="follow one hand from --box or the centre only")
    add("--view", metavar="[HOST:]PORT", help="the hands in 3D in a browser (127.0.0.1 unless HOST; needs [view])")
    add("--stream", metavar="[HOST:]PORT", help="each frame's hands as JSON over a WebSocket (127.0.0.1 unless HOST)")


def infer_command(sub) -> None:
    """handssca infer"""
    add = command(sub, "infer", cmd_infer, "hand meshes for images or folders: overlays, JSON, .obj, .glb",
                  "handssca.runtime.predictor:PredictorOptions", "handssca.runtime.infer:infer_images")  # fmt: skip
    add("images", nargs="+", help="image files or folders")
    predictor_options(add)
    camera_options(add)
    add("-o", "--output", dest="out", help="output folder")


def demo_command(sub) -> None:
    """handssca demo"""
    demo = call("handssca.demo:run_demo", needs_torch="demo", say=lambda report: f"demo finished: open {report}")
    add = command(sub, "demo", demo, "the whole pipeline on this machine, nothing downloaded (a few minutes)")
    add("-o", "--output", dest="out", help="output folder")
    add("--frames", type=at_least(4), help="frames of the synthetic video")
    add("--seed", type=int, help="seed of the synthetic video")
    add("--quick", action="store_true", help="fewer timing runs and frames (for tests)")


def bench_command(sub) -> None:
    """handssca bench"""
    bench = call("handssca.bench:run_bench_command", needs_torch="bench", options="handssca.bench:BenchOptions",
                 start="bench: loading PyTorch and the network ...")  # fmt: skip
    add = command(sub, "bench", bench, "latency and parity of every available backend vs PyTorch")
    add("--checkpoint", help="trained weights (default: the untrained paper model)")
    network_options(add, attention=False)
    add("--batches", type=batch_list, help="batch sweep (comma-separated)")
    add("--runs", type=at_least(1), help="timed runs at batch 1 (fewer at larger batches)")
    add("--compile", dest="compile_model", action="store_true", help="also time torch.compile (slow on CPU)")
    add("--data", dest="data_root", help="a FreiHAND-layout folder: also compare the official metrics per backend")
    add("--data-samples", type=at_least(1), help="samples for the metrics")
    add(
        "--int8-calibration",
        dest="int8_images",
        type=at_least(0),
        metavar="N",
        help="synthetic hands for int8 (0: none)",
    )
    add("-o", "--output", help="folder for bench.json and the plots")


def mano_command(sub) -> None:
    """handssca mano convert | render | builtin"""
    mano = sub.add_parser("mano", help="MANO model files: convert the official pickles to .npz")
    mano_sub = mano.add_subparsers(dest="mano_command", metavar="MANO_COMMAND", required=True)
    convert = call("handssca.runtime.mano.files:convert_mano")
    add = command(mano_sub, "convert", convert, "validate MANO_RIGHT.pkl / MANO_LEFT.pkl and write an .npz")
    add("source", help="MANO_RIGHT.pkl or MANO_LEFT.pkl as downloaded (or an .npz)")
    add("-o", "--output", help="the .npz to write (default: the source name, lower case)")
    render = call("handssca.runtime.mesh_render:render_hand_model")
    add = command(mano_sub, "render", render, "a picture of the hand model in a few poses (PNG)")
    add("--mano", metavar="PATH", help="MANO .pkl/.npz (default: the built-in stand-in hand)")
    add("-o", "--output", help="image to write")
    add("--fingertips", choices=sorted(FINGERTIP_IDS), help="MANO fingertip ids")
    add("--size", type=at_least(32), help="pixels per pose tile")
    add("--seed", type=int, help="seed of the random poses")
    builtin = call("handssca.runtime.mano.builtin:save_builtin_hand", say=lambda path: f"wrote {path}: {STAND_IN}")
    add = command(mano_sub, "builtin", builtin, "write the built-in stand-in hand (NOT MANO) as a MANO-format .npz")
    add("-o", "--output", dest="path", help=".npz to write")


def serve_command(sub) -> None:
    """handssca serve repository | check | setup | start | load-test"""
    serve = sub.add_parser("serve", help="Triton Inference Server: a model repository, the server, a load test")
    serve_sub = serve.add_subparsers(dest="serve_command", metavar="STEP", required=True)
    for register in (serve_repository_step, serve_check_step, serve_setup_step, serve_start_step, serve_load_test_step):
        register(serve_sub)


def serve_repository_step(serve_sub) -> None:
    """handssca serve repository"""
    repository = call("handssca.serving.repository:write_repository", options=SERVING_OPTIONS)
    add = command(serve_sub, "repository", repository, "write a Triton model repository for an .onnx or engine")
    add("model", help="an exported .onnx, or a TensorRT engine with its sidecar")
    add("-o", "--output", required=True, help="the repository folder (new, or one to add to)")
    add("--fingertips", choices=sorted(FINGERTIP_IDS), help="MANO fingertip ids")
    add("--plugin", help="engines: the scan plugin library (default: the engine's sidecar)")
    scheduling_options(add)


def serve_check_step(serve_sub) -> None:
    """handssca serve check"""
    add = command(serve_sub, "check", cmd_serve_check, "parse and cross-check a repository's config.pbtxt files",
                  "handssca.serving.repository:check_repository")  # fmt: skip
    add("repository")
    add("--trust-modified", action="store_true", help="accept model or python step files changed since written")


def serve_setup_step(serve_sub) -> None:
    """handssca serve setup"""
    setup = call(
        "handssca.serving.server:setup_server_environment", say=lambda env: f"ready: {env.folder}, {env.binary}"
    )
    add = command(serve_sub, "setup", setup, "make Triton's own environment (nvidia-pytriton, numpy<2, handssca)")
    add("folder", nargs="?", help="default: $HANDSSCA_TRITON_ENV or ~/.cache/handssca/triton-server")
    add("--quiet", action="store_true", help="print pip's output only on failure")


def serve_start_step(serve_sub) -> None:
    """handssca serve start"""
    start = call("handssca.serving.server:serve_repository", options="handssca.serving.server:ServeOptions")
    add = command(serve_sub, "start", start, "run tritonserver on a repository until Ctrl-C or SIGTERM")
    add("repository")
    add("--env", dest="environment", help="the server environment (default: as 'serve setup')")
    add("--host", help="the address to listen on (0.0.0.0: every interface, no authentication)")
    add("--http-port", type=at_least(1), help="Triton's HTTP port")
    add("--grpc-port", type=at_least(1), help="Triton's gRPC port")
    add("--metrics-port", type=at_least(1), help="Triton's metrics port")
    add("--log", help="the server's log file (default: a temporary folder)")
    add("--trust-modified", action="store_true", help="serve model or python step files changed since written")


def serve_load_test_step(serve_sub) -> None:
    """handssca serve load-test"""
    load = call("handssca.serving.load_test:run_load_test_command", serving=SERVING_OPTIONS,
                options="handssca.serving.load_test:LoadTestOptions")  # fmt: skip
    add = command(serve_sub, "load-test", load, "concurrent clients against Triton: throughput, latency, parity")
    add("model", help="an exported .onnx")
    add("-o", "--output", help="folder for JSON, table, plot")
    add("--concurrency", type=batch_list, help="client counts")
    add("--duration", dest="duration_s", type=float, help="seconds per level")
    add("--protocol", choices=("grpc", "http"), help="the client protocol")
    add("--hands", type=at_least(1), help="distinct hands sent")
    add("--env", dest="environment", help="the server environment (default: as 'serve setup')")
    add("--batching", choices=("both", "dynamic", "none"), help="the servers to run")
    add("--kill-step-every", dest="kill_step_every_s", type=float, metavar="S",
        help="SIGKILL the network's python step every S seconds: lost requests, recovery times (0: never)")  # fmt: skip
    scheduling_options(add)


# Every command's parser, in the order --help lists them: a new command is one function here.
COMMANDS = (
    info_command, doctor_command, export_command, build_engine_command, data_command, train_command,
    checkpoint_command, eval_command, webcam_command, infer_command, demo_command, bench_command, mano_command,
    serve_command,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(["handssca", *[a for a in argv if not a.startswith("-")][:1]])
    try:
        return _main(argv)
    except HandSSCAError as exc:  # 2 for an option, as argparse's usage errors; 1 for the rest
        print(f"{command}: {one_line(exc)}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:  # results are written atomically: nothing half-written is left
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:  # a package of an extra that is not installed: which extra, one line
        if interrupted_import(exc):
            print(f"{command}: interrupted", file=sys.stderr)
            return 130
        missing = missing_extra(exc)
        if missing is None:
            raise
        print(f"{command}: {missing}", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    parser = build_parser()
    choices = parser.get_default("commands")
    if argv and not argv[0].startswith("-") and argv[0] not in choices:
        known = ", ".join(choices)
        print(
            f"handssca: unknown command '{argv[0]}' (available: {known}; 'handssca --help' lists them)", file=sys.stderr
        )
        return 2
    for chosen in chosen_parsers(parser, argv):
        adopt_defaults(chosen)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    # A service manager's SIGTERM unwinds like Ctrl-C: servers a command started are stopped and
    # temporary files removed on the way out (commands with a stop of their own, the webcam loop
    # and serve start, install their own handler).
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.handler(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
