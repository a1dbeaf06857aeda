"""The ``handssca`` command: parsing and dispatch only. Each handler is one call into the layer
that owns the work; every user-facing failure is a ``HandSSCAError`` (one line, exit status 1).
Heavy modules are imported inside the handlers, so commands that need no torch run without it."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from handssca import __version__
from handssca.errors import HandSSCAError
from handssca.export.options import DEFAULT_OPSET, INT8_FORMATS, PRECISIONS, SCAN_VARIANTS
from handssca.models.config import ATTENTION_KINDS
from handssca.runtime.hand_finder import MAX_HANDS
from handssca.runtime.hand_finder import VARIANTS as HAND_VARIANTS
from handssca.runtime.hand_tracking import VERIFY_EVERY
from handssca.runtime.mano import FINGERTIP_IDS
from handssca.runtime.predictor import SIDES
from handssca.serving.server import LOOPBACK
from handssca.training.datasets import DEFAULT_SPLITS


class CommandError(HandSSCAError):
    """A command-line usage problem (options that do not go together)."""


def require_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"'handssca {command}' needs PyTorch: pip install 'handssca[train]' (torch==2.13.0 for the CPU build)"
        ) from exc


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


def parse_box(text: str | None):
    """--box x0,y0,x1,y1 -> a tuple (or None)."""
    if text is None:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
        raise CommandError(f"--box {text}: expected x0,y0,x1,y1 with x0 < x1 and y0 < y1")
    return box


def open_predictor(args: argparse.Namespace, find_hands: bool):
    """A HandMeshPredictor over --model (.onnx / .engine) or --checkpoint, with --mano, and the
    hand finder of --hand-models/--hand-variant/--max-hands/--mirror when ``find_hands``."""
    from handssca.runtime.builtin_hand import load_hand_model
    from handssca.runtime.hand_finder import HandFinder
    from handssca.runtime.predictor import HandMeshPredictor

    if bool(args.model) == bool(args.checkpoint):
        raise CommandError("give exactly one of --model (.onnx or .engine) and --checkpoint")
    if args.checkpoint:
        require_torch("--checkpoint")
    finder = None
    if find_hands:
        finder = HandFinder(args.hand_models, args.hand_variant, max_hands=args.max_hands, mirrored=args.mirror)
    mano, fingertip_ids, _ = load_hand_model(args.mano)
    return HandMeshPredictor.open(
        args.model or args.checkpoint, mano, fingertip_ids, plugin=getattr(args, "plugin", None), finder=finder
    )


def cmd_info(args: argparse.Namespace) -> int:
    require_torch("info")
    from handssca.models import format_model_report, model_report
    from handssca.training.config import load_model_config

    config = load_model_config(args.config, {"attention": args.attention, "input_size": args.input_size})
    report = model_report(config, args.batch, args.imagenet_weights)
    print(json.dumps(report, indent=2) if args.json else format_model_report(report))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from handssca.doctor import as_json, diagnose, format_findings

    findings = diagnose()
    print(json.dumps(as_json(findings), indent=2) if args.json else format_findings(findings))
    return 1 if any(f.status == "broken" for f in findings) else 0


def cmd_export(args: argparse.Namespace) -> int:
    require_torch("export")
    from handssca.export import export_onnx
    from handssca.runtime.builtin_hand import load_hand_model
    from handssca.training.checkpoint import load_network

    if args.precision == "int8" and not args.calibration:
        raise CommandError("--precision int8 needs --calibration DATA (a data set folder, or synth)")
    overrides = {"attention": args.attention, "input_size": args.input_size}
    model, weights = load_network(args.checkpoint, args.config, overrides, args.seed)
    if weights.startswith("untrained"):
        print(f"exporting the {weights} network: pass --checkpoint for trained weights")
    mano, fingertip_ids = None, None
    if args.with_mano:
        mano, fingertip_ids, label = load_hand_model(args.with_mano, args.fingertips)
        hint = " (pass --with-mano PATH for the real model)" if args.with_mano == "builtin" else ""
        print(f"MANO in the graph: {label}{hint}")
    options = dict(
        batch=args.batch, opset=args.opset, scan=args.scan, validate=not args.no_validate, tolerance=args.tolerance,
        mano=mano, mano_flat_hand_mean=args.flat_hand_mean, fingertip_ids=fingertip_ids, weights=weights,
    )  # fmt: skip
    if args.precision == "int8":
        from handssca.export.quantize import export_int8

        info, skipped = export_int8(
            model, args.output, calibration=args.calibration, images=args.calibration_images, fmt=args.int8_format,
            **options,
        )  # fmt: skip
        for reason in skipped:
            print(f"calibration: counted out {reason}")
        print(f"wrote {args.output}: {info['description']}; calibrated on {info['calibration']}")
        print(f"measure what it costs: handssca eval --onnx FP32.onnx --onnx {args.output}")
        return 0
    result = export_onnx(model, args.output, precision=args.precision, **options)
    nodes = f"{result.scan_nodes} selective-scan nodes" if args.scan == "custom" else "scans in standard ONNX ops"
    print(f"wrote {result.path} ({args.precision}, {nodes}) and {result.sidecar}")
    if result.comparison is not None:
        print("ONNX Runtime vs PyTorch fp32 (polygraphy), max |diff|: " + result.comparison.summary("onnxruntime"))
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from handssca.runtime.engine_build import build_engine

    result = build_engine(
        args.onnx, args.output or str(Path(args.onnx).with_suffix(".engine")), plugin=args.plugin,
        min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch, workspace_mib=args.workspace,
        timing_cache=args.timing_cache,
    )  # fmt: skip
    print(f"wrote {result.engine} and {result.sidecar} in {result.seconds:.0f} s")
    print(f"the same with trtexec: {result.trtexec}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from handssca.runtime.builtin_hand import load_hand_model
    from handssca.training.synthetic import SynthOptions, make_synthetic_dataset

    if args.train < 1 or args.evaluation < 0:
        raise CommandError("--train must be at least 1 and --evaluation at least 0")
    model, fingertip_ids, label = load_hand_model(args.mano, args.fingertips)
    options = SynthOptions(
        train=args.train, evaluation=args.evaluation, occluder_probability=args.occluders,
        finger_pose_std=args.finger_pose_std, roll_deg=args.roll, tilt_std=args.tilt, back_probability=args.back,
        seed=args.seed,
    )  # fmt: skip
    root = make_synthetic_dataset(args.output, model, fingertip_ids, options)
    print(f"wrote {root}: {args.train} training hands x 4 backgrounds, {args.evaluation} evaluation ({label})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    require_torch("train")
    from handssca.training.trainer import train

    print("\n".join(train(args.config, args.set, resume=args.resume, auto_resume=args.auto_resume)))
    return 0


def cmd_checkpoint_slim(args: argparse.Namespace) -> int:
    require_torch("checkpoint slim")
    from handssca.training.checkpoint import save_weights_only

    state = save_weights_only(args.checkpoint, args.output)
    size = Path(args.output).stat().st_size / 1e6
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in state["metrics"].items())
    print(f"wrote {args.output} ({size:.1f} MB; epoch {state['epoch']}{'; ' + metrics if metrics else ''})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.checkpoint:
        require_torch("eval --checkpoint")
    from handssca.training.evaluate import run_evaluation

    lines = run_evaluation(
        dataset=args.dataset, root=args.root, mano=args.mano, split=args.split, checkpoint=args.checkpoint,
        onnx=args.onnx or (), engines=args.engine or (), plugin=args.plugin, mean_hand=args.mean_hand,
        batch_size=args.batch, samples=args.samples, output=args.output, submission=args.submission,
    )  # fmt: skip
    print("\n".join(lines))
    return 0


def cmd_webcam(args: argparse.Namespace) -> int:
    from handssca.runtime.webcam import WebcamOptions, run_webcam

    if args.headless and not args.output:
        raise CommandError("--headless needs -o/--output for the annotated video and JSON")
    options = WebcamOptions(
        box=parse_box(args.box), side=args.side, smooth=not args.no_smooth, headless=args.headless,
        output=Path(args.output) if args.output else None, save_meshes=args.save_meshes, max_frames=args.max_frames,
        duration_s=args.duration, min_confidence=args.min_confidence, max_hands=args.max_hands,
        find_hands=not args.no_finder, verify_every=args.verify_every,
    )  # fmt: skip
    source = int(args.source) if args.source.isdigit() else args.source
    report = run_webcam(open_predictor(args, find_hands=options.find_hands), source, options)
    print("\n".join(report.summary_lines()))
    if report.interrupted:
        return 130
    if report.error:
        raise CommandError(report.error)
    if report.frames == 0:
        raise CommandError(f"{args.source}: no frame could be read ({report.unreadable} unreadable)")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from handssca.runtime.infer import infer_images

    box = parse_box(args.box)
    report = infer_images(
        open_predictor(args, find_hands=box is None), args.images, args.output, box=box, side=args.side
    )
    print("\n".join(report.summary_lines()))
    print(f"wrote overlays, meshes and predictions.json to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    require_torch("demo")
    from handssca.demo import run_demo

    report = run_demo(Path(args.output), frames=args.frames, seed=args.seed, quick=args.quick)
    print(f"demo finished: open {report}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    require_torch("bench")
    from handssca.bench import run_bench, summary_text
    from handssca.training.config import load_model_config

    config = None if args.checkpoint else load_model_config(args.config, {"input_size": args.input_size})
    report = run_bench(
        Path(args.output), model_config=config, checkpoint=args.checkpoint,
        batches=args.batches, runs=args.runs, compile_model=args.compile,
        data_root=args.data, data_samples=args.data_samples, int8_images=args.int8_calibration,
    )  # fmt: skip
    print(summary_text(report))
    print(f"wrote {Path(args.output) / 'bench.json'}, table.txt and {', '.join(report['plots'])}")
    return 0


def cmd_mano_convert(args: argparse.Namespace) -> int:
    from handssca.runtime.mano import load_mano, save_mano_npz

    out = Path(args.output or Path(args.source).with_suffix(".npz").name.lower())
    if out.suffix != ".npz":
        raise CommandError(f"{out}: the output must be an .npz file")
    model = load_mano(args.source)
    save_mano_npz(model, out, source_file=args.source)
    print(
        f"wrote {out}: {len(model.v_template)} vertices, {len(model.parents)} joints, "
        f"{model.shapedirs.shape[2]} shape and {model.posedirs.shape[2]} pose blend shapes, {len(model.faces)} faces"
    )
    return 0


def cmd_mano_builtin(args: argparse.Namespace) -> int:
    from handssca.runtime.builtin_hand import STAND_IN_NOTE, save_builtin_hand

    print(f"wrote {save_builtin_hand(args.output)}: {STAND_IN_NOTE}")
    return 0


def cmd_mano_render(args: argparse.Namespace) -> int:
    from handssca.runtime.builtin_hand import load_hand_model
    from handssca.runtime.files import write_image
    from handssca.runtime.mesh_render import pose_sheet

    model, fingertip_ids, label = load_hand_model(args.mano, args.fingertips)
    write_image(args.output, pose_sheet(model, fingertip_ids, label, size=args.size, seed=args.seed))
    print(f"wrote {args.output} ({label})")
    return 0


def serving_options(args: argparse.Namespace):
    from handssca.serving.repository import ServingOptions

    return ServingOptions(
        max_batch=args.max_batch, preferred_batch=args.preferred_batch, queue_delay_us=args.queue_delay_us,
        dynamic_batching=not args.no_dynamic_batching, instances=args.instances, version=args.version,
        threads=args.threads,
    )  # fmt: skip


def cmd_serve_repository(args: argparse.Namespace) -> int:
    from handssca.serving.repository import write_repository

    report = write_repository(
        args.model, args.output, mano=args.mano, fingertips=args.fingertips, plugin=args.plugin,
        options=serving_options(args),
    )  # fmt: skip
    kind = "TensorRT engine + plugin" if report.manifest["kind"] == "engine" else "ONNX Runtime + scan kernel"
    print(f"wrote {report.path} (version {args.version}; {kind}): {', '.join(report.models)}")
    print(f"serve it: handssca serve start {report.path}")
    return 0


def cmd_serve_check(args: argparse.Namespace) -> int:
    from handssca.serving.repository import check_repository

    configs = check_repository(args.repository)
    print(f"{args.repository}: {len(configs)} models, every config.pbtxt parses and the ensemble's tensors agree")
    return 0


def cmd_serve_setup(args: argparse.Namespace) -> int:
    from handssca.serving.server import default_environment, setup_server_environment

    env = setup_server_environment(args.folder or default_environment(), quiet=args.quiet)
    print(f"Triton server environment ready in {env.folder}: {env.binary}")
    return 0


def cmd_serve_start(args: argparse.Namespace) -> int:
    from functools import partial

    from handssca.serving.server import TritonServer, serve_until_stopped

    server = TritonServer(
        args.repository, environment=args.env, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, log=args.log,
    )  # fmt: skip
    code = serve_until_stopped(server, announce=partial(print, flush=True))  # flushed: often read through a pipe
    if code != 0:
        why = server.stop_note or server.first_error()
        raise CommandError(f"tritonserver exited with {code} when stopped: {why} (log: {server.log_path})")
    print(f"stopped: tritonserver exited with {code}")
    return 0


BATCHING_MODES = {"both": (True, False), "dynamic": (True,), "none": (False,)}


def cmd_serve_load_test(args: argparse.Namespace) -> int:
    from handssca.measure import environment, write_json
    from handssca.runtime.files import check_writable
    from handssca.serving.load_test import plot_report, run_load_test, summary_table

    output = Path(args.output)
    check_writable(output / "load_test.json")
    report = run_load_test(
        args.model, concurrency=args.concurrency, duration_s=args.duration, protocol=args.protocol,
        environment=args.env, mano=args.mano, hands=args.hands, options=serving_options(args),
        modes=BATCHING_MODES[args.batching], kill_step_every_s=args.kill_step_every,
    )  # fmt: skip
    report = {"environment": environment(), **report}
    write_json(output / "load_test.json", report)
    (output / "table.md").write_text(summary_table(report) + "\n")
    plot = plot_report(report, output / "load_test.png")
    print(summary_table(report))
    print(f"wrote {output / 'load_test.json'}, {output / 'table.md'} and {plot}")
    levels = [lv for m in report["modes"].values() for lv in m["levels"]]
    # Requests lost to the python steps killed on purpose are the measurement, not a failure.
    failures = sum(lv["parity_failures"] + (0 if lv["faults"] else lv["errors"]) for lv in levels)
    if failures:
        raise CommandError(f"{failures} requests failed or differed from the runtime (see load_test.json)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handssca", description="HandSSCA: train, export, and run a 3D hand mesh.")
    parser.add_argument("--version", action="version", version=f"handssca {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def network_options(p, attention=True):
        p.add_argument("--config", help="YAML file with a 'model:' section (configs/model/)")
        if attention:
            p.add_argument("--attention", choices=ATTENTION_KINDS, help="the paper's ablation (default ssca)")
        p.add_argument("--input-size", type=int, help="crop size in pixels (multiple of 128; default 256)")

    info = sub.add_parser("info", help="model summary: parameter counts, scan implementation, a forward pass")
    network_options(info)
    info.add_argument("--imagenet-weights", metavar="PTH", help="torchvision resnet50-*.pth to load into the backbone")
    info.add_argument("--batch", type=at_least(1), default=1, help="batch size of the timed forward pass")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(handler=cmd_info)

    doctor = sub.add_parser("doctor", help="what this machine can run: kernels, runtimes, GPU, TensorRT plugin")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=cmd_doctor)

    export = sub.add_parser("export", help="export the network to ONNX (one custom node per selective scan)")
    export.add_argument("-o", "--output", default="handssca.onnx", help="the .onnx (and a .json sidecar)")
    export.add_argument("--checkpoint", metavar="PT", help="trained weights (default: the untrained network)")
    network_options(export)
    export.add_argument("--batch", type=at_least(1), help="fixed batch size (default: dynamic)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    export.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp16: for TensorRT; int8: convs")
    export.add_argument("--calibration", metavar="DATA", help="int8: a data set folder (any layout) or synth")
    export.add_argument("--calibration-images", type=at_least(1), default=64, metavar="N", help="int8: images (64)")
    export.add_argument("--int8-format", choices=INT8_FORMATS, default="auto", help="s8s8: TensorRT's Q/DQ")
    export.add_argument("--scan", choices=SCAN_VARIANTS, default="custom", help="portable: standard ONNX ops only")
    export.add_argument("--seed", type=int, default=0, help="seed of the untrained weights")
    export.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    export.add_argument("--tolerance", type=float, help="largest |ORT - PyTorch| accepted (1e-4 fp32, 5e-2 fp16)")
    export.add_argument("--with-mano", nargs="?", const="builtin", metavar="PATH", help="MANO in the graph")
    export.add_argument("--flat-hand-mean", action="store_true", help="pose relative to the flat hand, not the mean")
    export.add_argument("--fingertips", choices=sorted(FINGERTIP_IDS), default="smplx", help="MANO fingertip ids")
    export.set_defaults(handler=cmd_export)

    engine = sub.add_parser("build-engine", help="build a TensorRT engine from an exported ONNX file (GPU)")
    engine.add_argument("onnx", help="the .onnx written by 'handssca export' (fp16 export for an fp16 engine)")
    engine.add_argument("-o", "--output", help="the engine to write (default: the ONNX name with .engine)")
    engine.add_argument("--plugin", metavar="SO", help="the scan plugin library (default: $HANDSSCA_TRT_PLUGIN)")
    engine.add_argument("--min-batch", type=at_least(1), default=1)
    engine.add_argument("--opt-batch", type=at_least(1), default=1)
    engine.add_argument("--max-batch", type=at_least(1), default=8)
    engine.add_argument("--workspace", type=at_least(1), default=2048, metavar="MIB", help="workspace limit in MiB")
    engine.add_argument("--timing-cache", metavar="FILE", help="timing cache to reuse and update")
    engine.set_defaults(handler=cmd_build_engine)

    data = sub.add_parser("data", help="data sets: make a synthetic one")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    synth = data_sub.add_parser("synth", help="render a synthetic hand data set in FreiHAND's layout")
    synth.add_argument("-o", "--output", default="data/synthetic", help="folder to write (default data/synthetic)")
    synth.add_argument("--train", type=at_least(0), default=256, help="training hands (each in 4 backgrounds)")
    synth.add_argument("--evaluation", type=at_least(0), default=64, help="evaluation hands")
    synth.add_argument("--occluders", type=float, default=0.3, help="probability of occluding shapes per image")
    synth.add_argument("--finger-pose-std", type=float, default=0.35, help="radians per finger pose component")
    synth.add_argument("--roll", type=float, default=180.0, help="in-plane rotation range, +- degrees")
    synth.add_argument("--tilt", type=float, default=0.6, help="out-of-plane tilt, std in radians")
    synth.add_argument("--back", type=float, default=0.5, help="probability that the back of the hand faces the camera")
    synth.add_argument("--mano", metavar="PATH", help="MANO .pkl/.npz (default: the built-in stand-in hand)")
    synth.add_argument("--fingertips", choices=sorted(FINGERTIP_IDS), default="smplx")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=cmd_data_synth)

    train = sub.add_parser("train", help="train from a YAML config (configs/train/)")
    train.add_argument("--config", help="YAML run config (default: the paper's FreiHAND recipe)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. train.epochs=5")
    train.add_argument("--resume", metavar="PT", help="continue a run from its last.pt")
    train.add_argument("--auto-resume", action="store_true", help="continue from train.out/last.pt when it exists")
    train.set_defaults(handler=cmd_train)

    checkpoint = sub.add_parser("checkpoint", help="training checkpoints: slim one down for shipping")
    checkpoint_sub = checkpoint.add_subparsers(dest="checkpoint_command", required=True)
    slim = checkpoint_sub.add_parser("slim", help="weights + model config only (no optimizer/RNG state)")
    slim.add_argument("checkpoint", help="a training checkpoint (last.pt / best.pt)")
    slim.add_argument("-o", "--output", required=True, help="the weight-only checkpoint to write")
    slim.set_defaults(handler=cmd_checkpoint_slim)

    evaluate = sub.add_parser("eval", help="official metrics of a checkpoint / ONNX / engine on a data set")
    evaluate.add_argument("--dataset", choices=sorted(DEFAULT_SPLITS), default="freihand")
    evaluate.add_argument("--root", required=True, help="the data set's folder (or a synthetic set)")
    evaluate.add_argument("--split", help="default: evaluation (FreiHAND), test (DexYCB)")
    evaluate.add_argument("--checkpoint", help="a training checkpoint (PyTorch)")
    evaluate.add_argument("--onnx", action="append", help="an exported .onnx (repeatable)")
    evaluate.add_argument("--engine", action="append", help="a TensorRT engine (repeatable)")
    evaluate.add_argument("--plugin", help="the TensorRT plugin library for --engine")
    evaluate.add_argument("--mano", default="builtin", help="MANO .pkl/.npz, or builtin (the stand-in hand)")
    evaluate.add_argument("--mean-hand", action="store_true", help="also score the training split's mean hand")
    evaluate.add_argument("--samples", type=at_least(0), default=0, help="evaluate the first N samples (0: all)")
    evaluate.add_argument("--batch", type=at_least(1), default=16)
    evaluate.add_argument("-o", "--output", default="eval.json", help="results JSON")
    evaluate.add_argument("--submission", help="also write the official pred.json (FreiHAND or HO3D format)")
    evaluate.set_defaults(handler=cmd_eval)

    def model_arguments(p):
        p.add_argument("--model", help="an exported .onnx (ONNX Runtime) or .engine (TensorRT)")
        p.add_argument("--checkpoint", help="a training checkpoint (runs in PyTorch)")
        p.add_argument("--mano", default="builtin", help="MANO .pkl/.npz, or builtin (the stand-in hand)")
        p.add_argument("--plugin", help="TensorRT plugin library (for .engine models)")
        p.add_argument("--box", help="a hand box x0,y0,x1,y1 in pixels (default: the hand finder finds the hands)")
        p.add_argument("--side", choices=SIDES, default="right", help="the --box hand's side")
        p.add_argument("--max-hands", type=at_least(1), default=MAX_HANDS, help=f"hands to find ({MAX_HANDS})")
        p.add_argument("--hand-models", metavar="DIR", help="the finder's ONNX models (default: the shipped ones)")
        p.add_argument("--hand-variant", choices=HAND_VARIANTS, default="full", help="the finder's models (full)")
        p.add_argument("--mirror", action="store_true", help="mirrored frames (a selfie camera): sides swap")

    webcam = sub.add_parser("webcam", help="live hand meshes: camera index, video, image folder or stream URL")
    webcam.add_argument("--source", default="0", help="camera index, video file, image folder or URL (default 0)")
    model_arguments(webcam)
    webcam.add_argument("--headless", action="store_true", help="no window: write the video and JSON to -o")
    webcam.add_argument("-o", "--output", help="folder for annotated.mp4, frames.jsonl, summary.json")
    webcam.add_argument("--save-meshes", action="store_true", help="also write one .obj per frame")
    webcam.add_argument("--no-smooth", action="store_true", help="turn the One Euro smoothing off")
    webcam.add_argument(
        "--max-frames", type=at_least(0), default=0, help="stop after N frames (0: when the source ends)"
    )
    webcam.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: no limit)")
    webcam.add_argument("--min-confidence", type=float, default=0.0, help="drop a hand below this confidence")
    webcam.add_argument(
        "--verify-every",
        type=at_least(0),
        default=VERIFY_EVERY,
        metavar="N",
        help=f"frames between the landmark model's checks of a tracked hand ({VERIFY_EVERY}; 0: never)",
    )
    webcam.add_argument("--no-finder", action="store_true", help="follow one hand from --box or the centre only")
    webcam.set_defaults(handler=cmd_webcam)

    infer = sub.add_parser("infer", help="hand meshes for images or folders: overlays, JSON, .obj")
    infer.add_argument("images", nargs="+", help="image files or folders")
    model_arguments(infer)
    infer.add_argument("-o", "--output", default="handssca_infer", help="output folder")
    infer.set_defaults(handler=cmd_infer)

    demo = sub.add_parser("demo", help="the whole pipeline on this machine, nothing downloaded (a few minutes)")
    demo.add_argument("-o", "--output", default="handssca_demo", help="output folder (default handssca_demo)")
    demo.add_argument("--frames", type=at_least(4), default=48, help="frames of the synthetic video")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="fewer timing runs and frames (for tests)")
    demo.set_defaults(handler=cmd_demo)

    bench = sub.add_parser("bench", help="latency and parity of every available backend vs PyTorch")
    bench.add_argument("--checkpoint", help="trained weights (default: the untrained paper model)")
    network_options(bench, attention=False)
    bench.add_argument("--batches", type=batch_list, default=(1, 2, 4, 8, 16, 32), help="batch sweep (comma-separated)")
    bench.add_argument("--runs", type=at_least(1), default=20, help="timed runs at batch 1 (fewer at larger batches)")
    bench.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    bench.add_argument("--data", help="a FreiHAND-layout folder: also compare the official metrics per backend")
    bench.add_argument("--data-samples", type=at_least(1), default=64)
    bench.add_argument(
        "--int8-calibration", type=at_least(0), default=32, metavar="N", help="synthetic hands for int8 (0: none)"
    )
    bench.add_argument("-o", "--output", default="bench_results", help="folder for bench.json and the plots")
    bench.set_defaults(handler=cmd_bench)

    mano = sub.add_parser("mano", help="MANO model files: convert the official pickles to .npz")
    mano_sub = mano.add_subparsers(dest="mano_command", metavar="MANO_COMMAND", required=True)
    convert = mano_sub.add_parser("convert", help="validate MANO_RIGHT.pkl / MANO_LEFT.pkl and write an .npz")
    convert.add_argument("source", help="MANO_RIGHT.pkl or MANO_LEFT.pkl as downloaded (or an .npz)")
    convert.add_argument("-o", "--output", help="the .npz to write (default: the source name, lower case)")
    convert.set_defaults(handler=cmd_mano_convert)
    render = mano_sub.add_parser("render", help="a picture of the hand model in a few poses (PNG)")
    render.add_argument("--mano", metavar="PATH", help="MANO .pkl/.npz (default: the built-in stand-in hand)")
    render.add_argument("-o", "--output", default="mano_poses.png", help="image to write (default mano_poses.png)")
    render.add_argument("--fingertips", choices=sorted(FINGERTIP_IDS), default="smplx", help="MANO fingertip ids")
    render.add_argument("--size", type=at_least(32), default=320, help="pixels per pose tile")
    render.add_argument("--seed", type=int, default=0, help="seed of the random poses")
    render.set_defaults(handler=cmd_mano_render)
    builtin = mano_sub.add_parser("builtin", help="write the built-in stand-in hand (NOT MANO) as a MANO-format .npz")
    builtin.add_argument("-o", "--output", default="builtin_hand.npz", help=".npz to write")
    builtin.set_defaults(handler=cmd_mano_builtin)
    serve = sub.add_parser("serve", help="Triton Inference Server: a model repository, the server, a load test")
    serve_sub = serve.add_subparsers(dest="serve_command", metavar="STEP", required=True)

    def scheduling_options(p):
        p.add_argument("--max-batch", type=at_least(1), default=16, help="max_batch_size of every model (16)")
        p.add_argument("--preferred-batch", type=at_least(1), default=8, help="the network's preferred batch (8)")
        p.add_argument("--queue-delay-us", type=at_least(0), default=2000, help="dynamic batching queue delay (2000)")
        p.add_argument("--no-dynamic-batching", action="store_true", help="run each request on its own")
        p.add_argument("--instances", type=at_least(1), default=1, help="instances of the network model (1)")
        p.add_argument("--version", type=at_least(1), default=1, help="the version folder to write (1)")
        p.add_argument("--threads", type=at_least(0), default=0, help="ONNX Runtime threads per instance (0: all)")
        p.add_argument("--mano", help="MANO .pkl/.npz for the mesh model (default: the built-in stand-in hand)")

    repository = serve_sub.add_parser("repository", help="write a Triton model repository for an .onnx or engine")
    repository.add_argument("model", help="an exported .onnx, or a TensorRT engine with its sidecar")
    repository.add_argument("-o", "--output", required=True, help="the repository folder (new, or one to add to)")
    repository.add_argument("--fingertips", choices=sorted(FINGERTIP_IDS), default="smplx")
    repository.add_argument("--plugin", help="engines: the scan plugin library (default: the engine's sidecar)")
    scheduling_options(repository)
    repository.set_defaults(handler=cmd_serve_repository)
    check = serve_sub.add_parser("check", help="parse and cross-check a repository's config.pbtxt files")
    check.add_argument("repository")
    check.set_defaults(handler=cmd_serve_check)
    setup = serve_sub.add_parser("setup", help="make Triton's own environment (nvidia-pytriton, numpy<2, handssca)")
    setup.add_argument("folder", nargs="?", help="default: $HANDSSCA_TRITON_ENV or ~/.cache/handssca/triton-server")
    setup.add_argument("--quiet", action="store_true", help="print pip's output only on failure")
    setup.set_defaults(handler=cmd_serve_setup)
    start = serve_sub.add_parser("start", help="run tritonserver on a repository until Ctrl-C or SIGTERM")
    start.add_argument("repository")
    start.add_argument("--env", help="the server environment (default: as 'serve setup')")
    start.add_argument(
        "--host",
        default=LOOPBACK,
        help=f"the address to listen on ({LOOPBACK}; 0.0.0.0: every interface, no authentication)",
    )
    start.add_argument("--http-port", type=at_least(1), default=8000)
    start.add_argument("--grpc-port", type=at_least(1), default=8001)
    start.add_argument("--metrics-port", type=at_least(1), default=8002)
    start.add_argument("--log", help="the server's log file (default: a temporary folder)")
    start.set_defaults(handler=cmd_serve_start)
    load = serve_sub.add_parser("load-test", help="concurrent clients against Triton: throughput, latency, parity")
    load.add_argument("model", help="an exported .onnx")
    load.add_argument("-o", "--output", default="benchmarks/results/triton_cpu", help="folder for JSON, table, plot")
    load.add_argument("--concurrency", type=batch_list, default=(1, 2, 4, 8, 16), help="client counts (1,2,4,8,16)")
    load.add_argument("--duration", type=float, default=10.0, help="seconds per level (10)")
    load.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    load.add_argument("--hands", type=at_least(1), default=16, help="distinct hands sent (16)")
    load.add_argument("--env", help="the server environment (default: as 'serve setup')")
    load.add_argument("--batching", choices=sorted(BATCHING_MODES), default="both", help="the servers to run (both)")
    load.add_argument(
        "--kill-step-every", type=float, default=0.0, metavar="S",
        help="SIGKILL the network's python step every S seconds: lost requests and recovery times (0: never)",
    )  # fmt: skip
    scheduling_options(load)
    load.set_defaults(handler=cmd_serve_load_test)
    parser.set_defaults(commands=sorted(sub.choices))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    choices = parser.get_default("commands")
    if argv and not argv[0].startswith("-") and argv[0] not in choices:
        known = ", ".join(choices)
        print(
            f"handssca: unknown command '{argv[0]}' (available: {known}; 'handssca --help' lists them)", file=sys.stderr
        )
        return 2
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
    except HandSSCAError as exc:
        print(f"handssca {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # results are written atomically: nothing half-written is left
        print(f"handssca {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
