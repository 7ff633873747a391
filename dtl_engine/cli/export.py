"""``export`` and ``predict``: one verified model file, and the images it classifies (a folder, sorted copies)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dtl_engine.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, CtrlC, counting_bar, notice
from dtl_engine.config import DEVICES
from dtl_engine.errors import RunError
from dtl_engine.inference.classify_folder import classify_folder
from dtl_engine.listener import StopToken


def cmd_export(args: argparse.Namespace) -> int:
    from dtl_engine.export import export_run

    fmt = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "torchscript")
    result = export_run(args.run_dir, args.out, format=fmt, overwrite=args.overwrite, verify=not args.no_verify,
                        measure_device=args.device, latency_repeats=args.latency_runs, weights=args.weights)
    print(result.message)
    if result.verified:
        print(f"verified: yes ({result.images_checked} images, max probability difference "
              f"{result.max_abs_diff:.1e}, allowed 1e-04)")
    else:
        print("verified: no (skipped)")
    for line in result.details():
        print(line)
    return 0


def cmd_predict_folder(args: argparse.Namespace) -> int:
    """``predict MODEL --folder DIR --csv OUT.csv``: classify a folder, optionally sort copies."""
    if not args.csv:
        raise RunError("Give the results file with --csv OUT.csv when classifying a folder.")
    if args.images:
        raise RunError("Give either image files or --folder, not both.")
    token = StopToken()
    bar, progress = counting_bar("classifying")
    with CtrlC(token):
        try:
            result = classify_folder(args.model, args.folder, args.csv, sort_into=args.sort_into,
                                     min_confidence=args.min_confidence, top_k=args.top_k, progress=progress,
                                     should_stop=lambda: token.stop_requested, on_notice=notice)
        finally:
            bar.close()
    for path, reason in result.unreadable:
        print(f"unreadable: {path}: {reason}")
    for path, reason in result.skipped:
        print(f"skipped: {path}: {reason}")
    print(result.summary())
    return EXIT_INTERRUPTED if result.cancelled else 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.folder is not None:
        return cmd_predict_folder(args)
    if not args.images:
        raise RunError("Give one or more image files, or a folder with --folder DIR --csv OUT.csv.")
    from dtl_engine.inference.predict import predict_each

    results = predict_each(args.model, args.images, top_k=args.top_k, on_notice=notice)
    failed = [r for r in results if r.error is not None]
    if args.json:
        print(json.dumps([{"image": r.path, "top": [{"class": c, "probability": v} for c, v in r.top],
                           **({"error": r.error} if r.error else {})} for r in results], indent=2))
    else:
        for r in results:
            if r.error is None:
                print(r.path)
                for name, prob in r.top:
                    print(f"  {prob:7.2%}  {name}")
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0


def add_parsers(sub: Any) -> None:
    """The ``export`` and ``predict`` sub-parsers."""
    p = sub.add_parser("export", help="Export a run to one TorchScript (or ONNX) file, verified.",
                       description="Export a run's best model to one file that takes uint8 images of any size "
                                   "and returns class probabilities. TorchScript needs only torch to load; ONNX "
                                   "needs onnxruntime. The file is checked in a fresh process before it is kept.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("--out", metavar="FILE", required=True, help="The file to write (e.g. model.pt or model.onnx).")
    p.add_argument("--format", choices=("torchscript", "onnx"), default=None,
                   help="File format (default: onnx for a .onnx name, else torchscript).")
    p.add_argument("--overwrite", action="store_true", help="Replace FILE if it exists.")
    p.add_argument("--no-verify", action="store_true", help="Skip the check in a fresh process (faster).")
    p.add_argument("--weights", choices=("best", "last"), default="best",
                   help="Which of the run's weights: 'best' (its result) or 'last' (its last checkpoint, e.g. when "
                        "the best weights are missing).")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="Where the fresh process measures the file's latency.")
    p.add_argument("--latency-runs", type=int, default=20, metavar="N",
                   help="Single-image calls timed for the median latency.")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="Classify images with an exported file.",
                       description="Classify images with an exported TorchScript or ONNX file.")
    p.add_argument("model", metavar="FILE", help="The exported model file.")
    p.add_argument("images", metavar="IMAGE", nargs="*", help="Image files.")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="How many classes to show per image.")
    p.add_argument("--folder", metavar="DIR", default=None,
                   help="Classify every image below DIR (only read, never changed); needs --csv.")
    p.add_argument("--csv", metavar="OUT.csv", default=None,
                   help="With --folder: write one row per image (path, top-1, confidence, top-k); never overwritten.")
    p.add_argument("--sort-into", metavar="OUT_DIR", default=None,
                   help="With --folder: COPY each image into OUT_DIR/<class>/ (never moves, never overwrites).")
    p.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                   help="With --sort-into: images whose top-1 probability is below P go to OUT_DIR/_unsure/.")
    p.add_argument("--json", action="store_true", help="Print the predictions as JSON.")
    p.set_defaults(func=cmd_predict)
