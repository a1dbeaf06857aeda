"""The ``handssca`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _hand_model(source, fingertips: str = "smplx"):
    """(model, fingertip ids, label) for --mano PATH or the built-in hand; one-line errors."""
    from handssca.runtime.builtin_hand import load_hand_model
    from handssca.runtime.mano import ManoFileError

    try:
        return load_hand_model(source, fingertips)
    except ManoFileError as exc:
        raise CommandError(str(exc)) from exc


def _require_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"'handssca {command}' needs PyTorch: pip install 'handssca[train]' (torch==2.13.0 for the CPU build)"
        ) from exc


def load_model_config(path: str | None, overrides: dict):
    """A HandSSCAConfig from a YAML file's ``model:`` section (or its top level), then overrides."""
    from handssca.models import HandSSCAConfig

    values: dict = {}
    if path:
        from handssca.training.config import ConfigError, read_yaml_mapping

        try:
            data = read_yaml_mapping(path)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        values = dict(data.get("model", data))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return HandSSCAConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise CommandError(f"{path or 'model config'}: {exc}") from exc


def cmd_info(args: argparse.Namespace) -> int:
    """Model summary: parameters per module against the paper, the scan implementation, a forward pass."""
    _require_torch("info")
    import time

    import torch

    from handssca import __version__
    from handssca.models import PAPER_PARAMETERS, HandSSCA, parameter_summary
    from handssca.ops import describe_scan_backend

    config = load_model_config(args.config, {"attention": args.attention, "input_size": args.input_size})
    torch.manual_seed(0)
    try:
        model = HandSSCA(config, imagenet_weights=args.imagenet_weights).eval()
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    rows = parameter_summary(model)
    image = torch.randn(args.batch, 3, config.input_size, config.input_size)
    with torch.inference_mode():
        model(image)  # warm-up
        start = time.perf_counter()
        outputs = model(image)
        forward_ms = (time.perf_counter() - start) * 1e3
    paper = {"total": PAPER_PARAMETERS["model"] if config.attention == "ssca" else None}
    attention_key = next(name for name, _ in rows if name.startswith("attention"))
    paper[attention_key] = PAPER_PARAMETERS.get(config.attention)
    report = {
        "version": __version__,
        "config": config.to_dict(),
        "parameters": {name: count for name, count in rows},
        "paper_parameters": {k: v for k, v in paper.items() if v},
        "selective_scan": describe_scan_backend("cpu"),
        "outputs": {k: list(v.shape) for k, v in outputs.items()},
        "forward_ms": round(forward_ms, 1),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"HandSSCA {__version__}  attention={config.attention}  input={config.input_size}x{config.input_size}")
    print(f"{'module':<30}{'parameters':>14}{'paper':>10}{'diff':>8}")
    for name, count in rows:
        target = paper.get(name)
        extra = f"{target / 1e6:>9.2f}M{(count - target) / target:>+8.1%}" if target else ""
        print(f"{name:<30}{count / 1e6:>13.3f}M{extra}")
    print("outputs: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items()))
    print(f"selective scan (cpu): {report['selective_scan']}")
    print(f"forward, batch {args.batch}, CPU, {report['threads']} threads: {forward_ms:.1f} ms")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """What this machine can run; exit 1 when something installed is broken."""
    from handssca.doctor import as_json, diagnose, format_findings

    findings = diagnose()
    print(json.dumps(as_json(findings), indent=2) if args.json else format_findings(findings))
    return 1 if any(f.status == "broken" for f in findings) else 0


def load_network(args: argparse.Namespace):
    """The network a command works on: --checkpoint's, or an untrained one from --config/flags.

    Returns (model, description of the weights).
    """
    import torch

    from handssca.models import HandSSCA

    if getattr(args, "checkpoint", None):
        from handssca.training.checkpoint import CheckpointError, model_from_checkpoint

        if args.config or args.attention or args.input_size:
            raise CommandError("--checkpoint fixes the model; drop --config, --attention and --input-size")
        try:
            return model_from_checkpoint(args.checkpoint), f"checkpoint {Path(args.checkpoint).name}"
        except CheckpointError as exc:
            raise CommandError(str(exc)) from exc
    config = load_model_config(args.config, {"attention": args.attention, "input_size": args.input_size})
    torch.manual_seed(args.seed)
    return HandSSCA(config).eval(), f"untrained (seed {args.seed})"


def cmd_export(args: argparse.Namespace) -> int:
    """A checkpoint (or the untrained network) to a checked ONNX file."""
    _require_torch("export")
    from handssca.export import ExportError, export_onnx

    model, weights = load_network(args)
    if weights.startswith("untrained"):
        print(f"exporting the {weights} network: pass --checkpoint for trained weights")
    mano, tips = None, None
    if args.with_mano:
        mano, tips, label = _hand_model(args.with_mano, args.fingertips)
        print(
            f"MANO in the graph: {label}"
            + (" (pass --with-mano PATH for the real model)" if args.with_mano == "builtin" else "")
        )
    try:
        result = export_onnx(
            model,
            args.output,
            batch=args.batch,
            opset=args.opset,
            precision=args.precision,
            scan=args.scan,
            validate=not args.no_validate,
            tolerance=args.tolerance,
            mano=mano,
            mano_flat_hand_mean=args.flat_hand_mean,
            fingertip_ids=tips,
            weights=weights,
        )
    except ExportError as exc:
        raise CommandError(str(exc)) from exc
    nodes = f"{result.scan_nodes} selective-scan nodes" if args.scan == "custom" else "scans in standard ONNX ops"
    print(f"wrote {result.path} ({args.precision}, {nodes}) and {result.sidecar}")
    if result.comparison is not None:
        print("ONNX Runtime vs PyTorch fp32 (polygraphy), max |diff|: " + result.comparison.summary("onnxruntime"))
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    """An exported ONNX file -> a TensorRT engine for this GPU (needs TensorRT, pycuda and a GPU)."""
    from handssca.runtime.tensorrt_engine import TensorRTError, build_engine

    engine = args.output or str(Path(args.onnx).with_suffix(".engine"))
    try:
        result = build_engine(
            args.onnx,
            engine,
            plugin=args.plugin,
            min_batch=args.min_batch,
            opt_batch=args.opt_batch,
            max_batch=args.max_batch,
            workspace_mib=args.workspace,
            timing_cache=args.timing_cache,
        )
    except TensorRTError as exc:
        raise CommandError(str(exc)) from exc
    print(f"wrote {result.engine} and {result.sidecar} in {result.seconds:.0f} s")
    print(f"the same with trtexec: {result.trtexec}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    """Renders a synthetic hand data set in FreiHAND's layout (the built-in hand unless --mano)."""
    from handssca.training.synthetic import SynthOptions, make_synthetic_dataset

    model, tips, label = _hand_model(args.mano, args.fingertips)
    if args.train < 1 or args.evaluation < 0:
        raise CommandError("--train must be at least 1 and --evaluation at least 0")
    options = SynthOptions(
        train=args.train,
        evaluation=args.evaluation,
        occluder_probability=args.occluders,
        finger_pose_std=args.finger_pose_std,
        roll_deg=args.roll,
        tilt_std=args.tilt,
        back_probability=args.back,
        seed=args.seed,
    )
    root = make_synthetic_dataset(args.output, model, tips, options)
    print(f"wrote {root}: {args.train} training hands x 4 backgrounds, {args.evaluation} evaluation ({label})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Trains HandSSCA from a YAML config (configs/train/), every field overridable with --set."""
    _require_torch("train")
    from handssca.runtime.mano import ManoFileError
    from handssca.training.checkpoint import CheckpointError
    from handssca.training.config import ConfigError, load_config
    from handssca.training.trainer import Trainer, TrainingError

    try:
        from handssca.training.datasets import DatasetError
    except ImportError:  # pragma: no cover - the data sets module ships with the package
        DatasetError = ValueError
    try:
        config = load_config(args.config, args.set)
        if args.resume is None and args.auto_resume:
            last = Path(config["train"]["out"]) / "last.pt"
            args.resume = str(last) if last.is_file() else None
        trainer = Trainer(config, resume=args.resume)
        print(f"MANO: {trainer.mano_note}; device {trainer.device}; {len(trainer.train_set)} training samples")
        metrics = trainer.fit()
    except (ConfigError, TrainingError, CheckpointError, ManoFileError, DatasetError) as exc:
        raise CommandError(str(exc)) from exc
    out = Path(config["train"]["out"])
    print(f"checkpoints in {out} (last.pt{', best.pt' if (out / 'best.pt').exists() else ''}); log {out / 'log.csv'}")
    if metrics:
        print("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return 0


def cmd_checkpoint_slim(args: argparse.Namespace) -> int:
    """Writes a checkpoint's weights and model config without the training state."""
    _require_torch("checkpoint slim")
    from handssca.training.checkpoint import CheckpointError, save_weights_only

    try:
        state = save_weights_only(args.checkpoint, args.output)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from exc
    size = Path(args.output).stat().st_size / 1e6
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in state["metrics"].items())
    print(f"wrote {args.output} ({size:.1f} MB; epoch {state['epoch']}{'; ' + metrics if metrics else ''})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Scores a checkpoint and/or exported models on a data set with the official metrics."""
    import numpy as np

    from handssca.runtime.mano import ManoFileError
    from handssca.training.config import load_config
    from handssca.training.datasets import DatasetError
    from handssca.training.evaluate import evaluate, mean_hand_backend, model_backend
    from handssca.training.metrics import format_table
    from handssca.training.samples import HandCrops
    from handssca.training.trainer import DEFAULT_SPLITS, TrainingError, load_mano_model, open_dataset

    if not (args.checkpoint or args.onnx or args.engine or args.mean_hand):
        raise CommandError("give at least one model: --checkpoint, --onnx, --engine or --mean-hand")
    overrides = [f"data.dataset={args.dataset}", f"data.root={args.root}", f"mano.model={args.mano}"]
    config = load_config(None, overrides)
    try:
        mano, tips, note = load_mano_model(config)
        split = args.split or DEFAULT_SPLITS[args.dataset][1] or "evaluation"
        records = open_dataset(config, split, mano)
    except (ManoFileError, DatasetError, TrainingError) as exc:
        raise CommandError(str(exc)) from exc
    backends, size = {}, None
    if args.checkpoint:
        _require_torch("eval --checkpoint")
        from handssca.models import TorchModel
        from handssca.training.checkpoint import CheckpointError, model_from_checkpoint

        try:
            model = model_from_checkpoint(args.checkpoint)
        except CheckpointError as exc:
            raise CommandError(str(exc)) from exc
        backends["pytorch"] = model_backend(TorchModel(model), mano, tips)
        size = model.config.input_size
    for path in args.onnx or []:
        from handssca.runtime.onnx_backend import OnnxModel, OnnxModelError

        try:
            onnx_model = OnnxModel(path)
        except OnnxModelError as exc:
            raise CommandError(str(exc)) from exc
        backends[f"onnxruntime:{Path(path).name}"] = model_backend(onnx_model, mano, tips)
        size = size or (onnx_model.metadata.get("input", {}).get("shape") or [None] * 3)[2]
    for path in args.engine or []:
        from handssca.runtime.tensorrt_engine import TensorRTError, TensorRTModel

        try:
            engine = TensorRTModel(path, plugin=args.plugin)
        except TensorRTError as exc:
            raise CommandError(str(exc)) from exc
        backends[f"tensorrt:{Path(path).name}"] = model_backend(engine, mano, tips)
    if args.mean_hand:
        try:
            train_records = open_dataset(config, DEFAULT_SPLITS[args.dataset][0] or "training", mano)
        except (DatasetError, TrainingError) as exc:
            raise CommandError(str(exc)) from exc
        backends["mean hand (baseline)"] = mean_hand_backend(train_records)
    crops = HandCrops(records, size=size or 256, augment=None)
    results = evaluate(backends, crops, batch_size=args.batch, limit=args.samples)
    predictions = results.pop("_predictions")
    print(f"{args.dataset} {split}, {min(len(crops), args.samples or len(crops))} samples, MANO: {note}")
    print(format_table(results))
    report = {"dataset": args.dataset, "split": split, "mano": note, "results": results}
    from handssca.runtime.files import write_atomically

    write_atomically(Path(args.output), json.dumps(report, indent=2).encode())
    print(f"wrote {args.output}")
    if args.submission:
        from handssca.training.submission import write_freihand_submission, write_ho3d_submission

        joints, vertices = predictions[next(iter(predictions))]
        writer = write_ho3d_submission if args.dataset == "ho3d" else write_freihand_submission
        writer(args.submission, np.asarray(joints), np.asarray(vertices))
        print(f"wrote {args.submission} (root-relative predictions of {next(iter(predictions))})")
    return 0


def _load_predictor(args: argparse.Namespace):
    """A HandMeshPredictor from --model (.onnx / .engine) or --checkpoint, with --mano."""
    from handssca.runtime.onnx_backend import OnnxModelError
    from handssca.runtime.predictor import HandMeshPredictor
    from handssca.runtime.tensorrt_engine import TensorRTError

    mano, tips, _ = _hand_model(args.mano)
    if bool(args.model) == bool(args.checkpoint):
        raise CommandError("give exactly one of --model (.onnx or .engine) and --checkpoint")
    try:
        if args.checkpoint:
            _require_torch("--checkpoint")
            from handssca.models import TorchModel
            from handssca.training.checkpoint import CheckpointError, model_from_checkpoint

            try:
                return HandMeshPredictor(TorchModel(model_from_checkpoint(args.checkpoint)), mano, tips)
            except CheckpointError as exc:
                raise CommandError(str(exc)) from exc
        return HandMeshPredictor.from_file(args.model, mano, tips, plugin=getattr(args, "plugin", None))
    except (OnnxModelError, TensorRTError, ValueError) as exc:
        raise CommandError(str(exc)) from exc


def _parse_box(text: str | None):
    if text is None:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
        raise CommandError(f"--box {text}: expected x0,y0,x1,y1 with x0 < x1 and y0 < y1")
    return box


def cmd_webcam(args: argparse.Namespace) -> int:
    """Hand meshes live from a camera, video, image folder or stream (headless: video + JSON)."""
    from handssca.runtime.webcam import WebcamError, WebcamOptions, run_webcam

    predictor = _load_predictor(args)
    source = int(args.source) if args.source.isdigit() else args.source
    if args.headless and not args.output:
        raise CommandError("--headless needs -o/--output for the annotated video and JSON")
    options = WebcamOptions(
        box=_parse_box(args.box),
        side=args.side,
        smooth=not args.no_smooth,
        headless=args.headless,
        output=Path(args.output) if args.output else None,
        save_meshes=args.save_meshes,
        max_frames=args.max_frames,
        min_confidence=args.min_confidence,
    )
    try:
        report = run_webcam(predictor, source, options)
    except WebcamError as exc:
        raise CommandError(str(exc)) from exc
    stages = ", ".join(f"{k} {v:.1f}" for k, v in report.stage_ms.items())
    print(f"{report.frames} frames at {report.fps:.1f} FPS (median ms: {stages}); dropped {report.dropped}")
    if report.video:
        print(f"wrote {report.video} and {report.json_lines}")
    if report.error:
        raise CommandError(report.error)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    """Images or a folder in; overlays, JSON and meshes out."""
    import cv2
    import numpy as np
    from tqdm import tqdm

    from handssca.runtime.files import write_atomically
    from handssca.runtime.mesh_render import mesh_to_obj, render_perspective
    from handssca.runtime.webcam import IMAGE_SUFFIXES, default_intrinsics, draw_skeleton

    predictor = _load_predictor(args)
    paths = []
    for item in args.images:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise CommandError(f"{p}: no such image or folder")
    if not paths:
        raise CommandError("no images to run on")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    box, results, unreadable = _parse_box(args.box), [], 0
    for path in tqdm(paths, desc="inferring", unit="img"):
        frame = cv2.imread(str(path))
        if frame is None:
            unreadable += 1
            print(f"skipped {path}: not a readable image")
            continue
        h, w = frame.shape[:2]
        hand_box = box or (0, 0, w, h)
        K = default_intrinsics(w, h)
        (hand,) = predictor.predict(frame, [hand_box], sides=[args.side], K=K)
        overlay = frame.copy()
        faces = predictor.mano.faces if args.side == "right" else predictor.mano.faces[:, ::-1]
        if hand.translation is not None and hand.translation[2] > 0:
            render_perspective(overlay, hand.vertices_camera, faces, K, light=(0.3, 0.4, 1.0))
        draw_skeleton(overlay, hand.keypoints_2d)
        ok, png = cv2.imencode(".png", np.concatenate([frame, overlay], axis=1))
        write_atomically(out / f"{path.stem}_overlay.png", png.tobytes())
        write_atomically(out / f"{path.stem}.obj", mesh_to_obj(hand.vertices, predictor.mano.faces).encode())
        results.append({"image": str(path), **hand.to_json()})
    write_atomically(out / "predictions.json", json.dumps(results, indent=1).encode())
    print(f"wrote overlays, meshes and predictions.json for {len(results)} images to {out}")
    return 1 if unreadable and not results else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline on a fresh machine: data, model, export, parity, latency, webcam, report."""
    _require_torch("demo")
    from handssca.demo import run_demo

    report = run_demo(Path(args.output), frames=args.frames, seed=args.seed, quick=args.quick)
    print(f"demo finished: open {report}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Latency and parity of every available backend against PyTorch: table, JSON and plots."""
    _require_torch("bench")
    from handssca.bench import format_table, run_bench

    config = None if args.checkpoint else load_model_config(args.config, {"input_size": args.input_size})
    batches = tuple(int(b) for b in args.batches.split(","))
    report = run_bench(
        Path(args.output),
        model_config=config,
        checkpoint=args.checkpoint,
        batches=batches,
        runs=args.runs,
        compile_model=args.compile,
        data_root=args.data,
        data_samples=args.data_samples,
    )
    from handssca.runtime.files import write_atomically

    env = report["environment"]
    lines = [
        f"HandSSCA {report['model']['weights']}, input {report['model']['config']['input_size']}; "
        f"{env['cpu']}, {env['torch_threads']} threads{', ' + env['gpu'] if env.get('gpu') else ''}; {env['date']}",
        format_table(report),
    ]
    for name, row in report["selective_scan"].items():
        parts = [f"{k} {v['median_ms']:.1f} ms" for k, v in row.items() if isinstance(v, dict) and "median_ms" in v]
        lines.append(f"scan {name} {tuple(row['shape'].values())}: " + ", ".join(parts))
    text = "\n".join(lines)
    print(text)
    write_atomically(Path(args.output) / "table.txt", (text + "\n").encode())
    print(f"wrote {Path(args.output) / 'bench.json'}, table.txt and {', '.join(report['plots'])}")
    return 0


def cmd_mano_convert(args: argparse.Namespace) -> int:
    """MANO_RIGHT.pkl / MANO_LEFT.pkl (as downloaded) -> a validated .npz (no torch needed)."""
    from handssca.runtime.mano import ManoFileError, load_mano, save_mano_npz

    try:
        model = load_mano(args.source)
    except ManoFileError as exc:
        raise CommandError(str(exc)) from exc
    out = Path(args.output or Path(args.source).with_suffix(".npz").name.lower())
    if out.suffix != ".npz":
        raise CommandError(f"{out}: the output must be an .npz file")
    save_mano_npz(model, out, source_file=args.source)
    print(
        f"wrote {out}: {len(model.v_template)} vertices, {len(model.parents)} joints, "
        f"{model.shapedirs.shape[2]} shape and {model.posedirs.shape[2]} pose blend shapes, {len(model.faces)} faces"
    )
    return 0


def cmd_mano_builtin(args: argparse.Namespace) -> int:
    """Writes the built-in stand-in hand as a MANO-format .npz."""
    from handssca.runtime.builtin_hand import STAND_IN_NOTE, save_builtin_hand

    out = save_builtin_hand(args.output)
    print(f"wrote {out}: {STAND_IN_NOTE}")
    return 0


def cmd_mano_render(args: argparse.Namespace) -> int:
    """A picture of a MANO model (the built-in stand-in unless --mano) in a few poses."""
    import numpy as np

    from handssca.runtime.files import write_atomically
    from handssca.runtime.mano import mano_forward
    from handssca.runtime.mesh_render import look_at_rotation, render_orthographic

    model, tips, label = _hand_model(args.mano, args.fingertips)
    rng = np.random.default_rng(args.seed)
    fist = np.zeros(48)
    fist[3:] = np.tile([1.1, 0.0, 0.0], 15)
    fist[3 + 3 * 12 : 3 + 3 * 15] = [0.3, 0.4, 0.6, 0.2, 0.1, 0.5, 0.1, 0.0, 0.5]  # thumb joints 13-15
    poses = {
        "rest (flat)": np.zeros(48),
        "fist": fist,
        "random": np.concatenate([np.zeros(3), rng.normal(scale=0.35, size=45)]),
        "random, shape +2": np.concatenate([np.zeros(3), rng.normal(scale=0.35, size=45)]),
    }
    shapes = np.zeros((len(poses), 10))
    shapes[3] = 2.0
    verts, _ = mano_forward(model, np.stack(list(poses.values())), shapes, flat_hand_mean=True, fingertip_ids=tips)
    import cv2

    rotation = look_at_rotation(0.5, -0.6)
    tiles = []
    for name, v in zip(poses, verts, strict=True):
        tile = render_orthographic(v, model.faces, rotation, size=args.size, scale=args.size * 3.2)
        cv2.putText(tile, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (40, 40, 40), 1, cv2.LINE_AA)
        tiles.append(tile)
    sheet = np.concatenate(tiles, axis=1)
    banner = np.full((28, sheet.shape[1], 3), 255, np.uint8)
    cv2.putText(banner, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 160), 1, cv2.LINE_AA)
    sheet = np.concatenate([banner, sheet], axis=0)
    out = Path(args.output)
    ok, encoded = cv2.imencode(out.suffix or ".png", sheet)
    if not ok:
        raise CommandError(f"{out}: cannot encode an image with this extension")
    write_atomically(out, encoded.tobytes())
    print(f"wrote {out} ({label})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handssca",
        description="HandSSCA: train, export, and run a 3D hand mesh network.",
    )
    from handssca import __version__

    parser.add_argument("--version", action="version", version=f"handssca {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="model summary: parameter counts, scan implementation, a forward pass")
    info.add_argument("--config", help="YAML file with a 'model:' section (see configs/)")
    info.add_argument(
        "--attention",
        choices=["none", "self_attention", "ssa", "ssca"],
        help="attention module (the paper's ablation); default ssca",
    )
    info.add_argument("--input-size", type=int, help="crop size in pixels (multiple of 128); default 256")
    info.add_argument("--imagenet-weights", metavar="PTH", help="torchvision resnet50-*.pth to load into the backbone")
    info.add_argument("--batch", type=int, default=1, help="batch size of the timed forward pass")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(handler=cmd_info)

    doctor = sub.add_parser("doctor", help="what this machine can run: kernels, runtimes, GPU, TensorRT plugin")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=cmd_doctor)

    export = sub.add_parser("export", help="export the network to ONNX (one custom node per selective scan)")
    export.add_argument(
        "-o", "--output", default="handssca.onnx", help="the .onnx to write (a .json sidecar beside it)"
    )
    export.add_argument("--checkpoint", metavar="PT", help="trained weights (default: the untrained network)")
    export.add_argument("--config", help="YAML file with a 'model:' section (see configs/), without --checkpoint")
    export.add_argument("--attention", choices=["none", "self_attention", "ssa", "ssca"])
    export.add_argument("--input-size", type=int)
    export.add_argument("--batch", type=int, help="fixed batch size (default: dynamic)")
    export.add_argument("--opset", type=int, default=18)
    export.add_argument(
        "--precision",
        choices=["fp32", "fp16"],
        default="fp32",
        help="fp16: activations in float16, scan parameters and state in float32 (for fp16 TensorRT engines)",
    )
    export.add_argument(
        "--scan",
        choices=["custom", "portable"],
        default="custom",
        help="custom: one custom node per scan (our TensorRT plugin / CPU kernel); "
        "portable: standard ONNX ops only (slower, runs anywhere)",
    )
    export.add_argument("--seed", type=int, default=0, help="seed of the untrained weights")
    export.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    export.add_argument(
        "--tolerance",
        type=float,
        help="largest |ONNX Runtime - PyTorch| accepted (default 1e-4 for fp32, 5e-2 for fp16)",
    )
    export.add_argument(
        "--with-mano",
        nargs="?",
        const="builtin",
        metavar="PATH",
        help="put MANO in the graph (outputs vertices, joints_3d): a MANO .pkl/.npz, "
        "or the built-in stand-in hand when no PATH is given",
    )
    export.add_argument(
        "--flat-hand-mean",
        action="store_true",
        help="the network's pose is relative to the flat hand (default: to MANO's mean hand)",
    )
    export.add_argument(
        "--fingertips",
        choices=["smplx", "manopth"],
        default="smplx",
        help="fingertip vertices of a MANO file (default smplx)",
    )
    export.set_defaults(handler=cmd_export)

    engine = sub.add_parser("build-engine", help="build a TensorRT engine from an exported ONNX file (GPU)")
    engine.add_argument("onnx", help="the .onnx written by 'handssca export' (fp16 export for an fp16 engine)")
    engine.add_argument("-o", "--output", help="the engine to write (default: the ONNX name with .engine)")
    engine.add_argument(
        "--plugin", metavar="SO", help="the selective-scan plugin library (default: $HANDSSCA_TRT_PLUGIN)"
    )
    engine.add_argument("--min-batch", type=int, default=1)
    engine.add_argument("--opt-batch", type=int, default=1)
    engine.add_argument("--max-batch", type=int, default=8)
    engine.add_argument("--workspace", type=int, default=2048, metavar="MIB", help="workspace limit in MiB")
    engine.add_argument("--timing-cache", metavar="FILE", help="timing cache to reuse and update")
    engine.set_defaults(handler=cmd_build_engine)

    data = sub.add_parser("data", help="data sets: make a synthetic one")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    synth = data_sub.add_parser("synth", help="render a synthetic hand data set in FreiHAND's layout")
    synth.add_argument("-o", "--output", default="data/synthetic", help="folder to write (default data/synthetic)")
    synth.add_argument("--train", type=int, default=256, help="training hands (each in 4 backgrounds)")
    synth.add_argument("--evaluation", type=int, default=64, help="evaluation hands")
    synth.add_argument("--occluders", type=float, default=0.3, help="probability of occluding shapes per image")
    synth.add_argument("--finger-pose-std", type=float, default=0.35, help="radians per finger pose component")
    synth.add_argument("--roll", type=float, default=180.0, help="in-plane rotation range, +- degrees")
    synth.add_argument("--tilt", type=float, default=0.6, help="out-of-plane tilt, std in radians")
    synth.add_argument("--back", type=float, default=0.5, help="probability that the back of the hand faces the camera")
    synth.add_argument("--mano", metavar="PATH", help="MANO .pkl/.npz (default: the built-in stand-in hand)")
    synth.add_argument("--fingertips", choices=["smplx", "manopth"], default="smplx")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=cmd_data_synth)

    train = sub.add_parser("train", help="train from a YAML config (configs/train/)")
    train.add_argument("--config", help="YAML run config (default: the paper's FreiHAND recipe)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. train.epochs=5"
    )
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
    evaluate.add_argument("--dataset", choices=["freihand", "ho3d", "dexycb"], default="freihand")
    evaluate.add_argument("--root", required=True, help="the data set's folder (or a synthetic set)")
    evaluate.add_argument("--split", help="default: evaluation (FreiHAND), test (DexYCB)")
    evaluate.add_argument("--checkpoint", help="a training checkpoint (PyTorch)")
    evaluate.add_argument("--onnx", action="append", help="an exported .onnx (repeatable)")
    evaluate.add_argument("--engine", action="append", help="a TensorRT engine (repeatable)")
    evaluate.add_argument("--plugin", help="the TensorRT plugin library for --engine")
    evaluate.add_argument("--mano", default="builtin", help="MANO .pkl/.npz, or builtin (the stand-in hand)")
    evaluate.add_argument(
        "--mean-hand",
        action="store_true",
        help="also score the training split's mean hand (a baseline: what predicting no pose at all scores)",
    )
    evaluate.add_argument("--samples", type=int, default=0, help="evaluate the first N samples (0: all)")
    evaluate.add_argument("--batch", type=int, default=16)
    evaluate.add_argument("-o", "--output", default="eval.json", help="results JSON")
    evaluate.add_argument("--submission", help="also write the official pred.json (FreiHAND or HO3D format)")
    evaluate.set_defaults(handler=cmd_eval)

    def model_arguments(p):
        p.add_argument("--model", help="an exported .onnx (ONNX Runtime) or .engine (TensorRT)")
        p.add_argument("--checkpoint", help="a training checkpoint (runs in PyTorch)")
        p.add_argument("--mano", default="builtin", help="MANO .pkl/.npz, or builtin (the stand-in hand)")
        p.add_argument("--plugin", help="TensorRT plugin library (for .engine models)")
        p.add_argument("--box", help="hand box x0,y0,x1,y1 in pixels (default: webcam centre / whole image)")
        p.add_argument("--side", choices=["right", "left"], default="right")

    webcam = sub.add_parser("webcam", help="live hand meshes: camera index, video, image folder or stream URL")
    webcam.add_argument("--source", default="0", help="camera index, video file, image folder or URL (default 0)")
    model_arguments(webcam)
    webcam.add_argument("--headless", action="store_true", help="no window: write the video and JSON to -o")
    webcam.add_argument("-o", "--output", help="folder for annotated.mp4, frames.jsonl, summary.json")
    webcam.add_argument("--save-meshes", action="store_true", help="also write one .obj per frame")
    webcam.add_argument("--no-smooth", action="store_true", help="turn the One Euro smoothing off")
    webcam.add_argument("--max-frames", type=int, default=0)
    webcam.add_argument(
        "--min-confidence", type=float, default=0.0, help="re-find the hand when confidence drops below this"
    )
    webcam.set_defaults(handler=cmd_webcam)

    infer = sub.add_parser("infer", help="hand meshes for images or folders: overlays, JSON, .obj")
    infer.add_argument("images", nargs="+", help="image files or folders")
    model_arguments(infer)
    infer.add_argument("-o", "--output", default="handssca_infer", help="output folder")
    infer.set_defaults(handler=cmd_infer)

    demo = sub.add_parser("demo", help="the whole pipeline on this machine, nothing downloaded (a few minutes)")
    demo.add_argument("-o", "--output", default="handssca_demo", help="output folder (default handssca_demo)")
    demo.add_argument("--frames", type=int, default=48, help="frames of the synthetic video")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="fewer timing runs and frames (for tests)")
    demo.set_defaults(handler=cmd_demo)

    bench = sub.add_parser("bench", help="latency and parity of every available backend vs PyTorch")
    bench.add_argument("--checkpoint", help="trained weights (default: the untrained paper model)")
    bench.add_argument("--config", help="YAML with a 'model:' section (default: the paper model)")
    bench.add_argument("--input-size", type=int)
    bench.add_argument("--batches", default="1,2,4,8,16,32", help="batch sweep (comma-separated)")
    bench.add_argument("--runs", type=int, default=20, help="timed runs at batch 1 (fewer at larger batches)")
    bench.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    bench.add_argument("--data", help="a FreiHAND-layout folder: also compare the official metrics per backend")
    bench.add_argument("--data-samples", type=int, default=64)
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
    render.add_argument(
        "--fingertips",
        choices=["smplx", "manopth"],
        default="smplx",
        help="fingertip vertex convention of a MANO file (default smplx)",
    )
    render.add_argument("--size", type=int, default=320, help="pixels per pose tile")
    render.add_argument("--seed", type=int, default=0, help="seed of the random poses")
    render.set_defaults(handler=cmd_mano_render)
    builtin = mano_sub.add_parser("builtin", help="write the built-in stand-in hand (NOT MANO) as a MANO-format .npz")
    builtin.add_argument("-o", "--output", default="builtin_hand.npz", help=".npz to write")
    builtin.set_defaults(handler=cmd_mano_builtin)
    parser.set_defaults(commands=sorted(sub.choices))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    choices = parser.get_default("commands")
    if argv and not argv[0].startswith("-") and argv[0] not in choices:
        print(
            f"handssca: unknown command '{argv[0]}' (available: {', '.join(choices)}; 'handssca --help' lists them)",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"handssca {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
