"""``evaluate``, ``explain`` and ``runs``: what a run learned, where its model looks, and the runs there are."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dtl_engine.cli.common import command_name
from dtl_engine.config import DEVICES
from dtl_engine.runs.folder import RunFolder


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dtl_engine.inference.evaluate import evaluate_run

    report = evaluate_run(args.run_dir, device=args.device)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"Accuracy {report.accuracy:.1%} on {report.coverage()}")
    if report.left_out:
        print(f"warning: {len(report.left_out)} image(s) of the run's {report.split} split were left out; the figures "
              "cover only the others and are not saved as the run's report:", file=sys.stderr)
        for item in report.left_out[:10]:
            print(f"  {item['path']}: {item['reason']}", file=sys.stderr)
        if len(report.left_out) > 10:
            print(f"  ... and {len(report.left_out) - 10} more", file=sys.stderr)
    width = max(len(c) for c in report.classes)
    print(f"  {'class':<{width}}  precision  recall     f1  support")
    for row in report.per_class:
        print(f"  {row['name']:<{width}}  {row['precision']:>9.1%}  {row['recall']:>6.1%}  "
              f"{row['f1']:>5.2f}  {row['support']:>7}")
    print("Confusion matrix (rows = true class, columns = predicted):")
    for name, counts in zip(report.classes, report.confusion):
        print(f"  {name:<{width}}  " + " ".join(f"{n:>5}" for n in counts))
    for m in report.mistakes[:args.mistakes]:
        print(f"mistake: {m['path']}  true {m['true']}, predicted {m['predicted']} ({m['confidence']:.0%})")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from dtl_engine.inference.explain import explain_run

    result = explain_run(args.run_dir, args.image, args.out, class_name=args.label, overwrite=args.overwrite,
                         device=args.device)
    print(f"Predicted {result.predicted}; heatmap for '{result.class_name}' ({result.probability:.1%}) "
          f"written to {args.out}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from dtl_engine.runs.listing import list_runs

    runs = list_runs()
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    if not runs:
        print(f"No runs yet. Start one with: {command_name()} train FOLDER")
        return 0
    print(f"{'run':<48} {'status':<11} {'method':<6} {'epochs':>7} {'best val':>8}  backbone")
    for r in runs:
        if r.status == "damaged":
            print(f"{r.name:<48} {'damaged':<11} {r.problem}")
            continue
        acc = f"{r.best_val_acc:.1%}" if r.best_val_acc is not None else "-"
        print(f"{r.name:<48} {r.status:<11} {r.method:<6} {f'{r.epochs_done}/{r.epochs}':>7} {acc:>8}  {r.backbone}")
    for r in runs:          # a replacement killed before its first epoch: where the earlier run is
        for aside in RunFolder(r.run_dir).set_aside_by_others():
            print(f"note: '{r.name}' holds the run it was replacing (--overwrite) in {aside}; "
                  f"'resume {r.run_dir}' puts it back.")
    return 0


def add_evaluate(sub: Any) -> None:
    """The ``evaluate`` command's sub-parser."""
    p = sub.add_parser("evaluate", help="Evaluate a run's best weights: accuracy, per class, confusion matrix.",
                       description="Evaluate a run's best weights on its test images (or validation images).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("--device", choices=DEVICES, default="auto", help="Where to run the evaluation.")
    p.add_argument("--mistakes", type=int, default=5, metavar="N", help="Show up to N misclassified images.")
    p.add_argument("--json", action="store_true", help="Print the evaluation as JSON.")
    p.set_defaults(func=cmd_evaluate)


def add_explain(sub: Any) -> None:
    """The ``explain`` command's sub-parser."""
    p = sub.add_parser("explain", help="Show where in an image the model looked: a Grad-CAM heatmap PNG.",
                       description="Write IMAGE with a Grad-CAM heatmap of the run's best model laid over it "
                                   "(red = what drove the decision most).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("image", metavar="IMAGE", help="The image to explain.")
    p.add_argument("--out", metavar="FILE", required=True, help="The PNG to write (e.g. heat.png).")
    p.add_argument("--class", dest="label", metavar="NAME", default=None,
                   help="Explain this class instead of the predicted one.")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="Where to run the model.")
    p.add_argument("--overwrite", action="store_true", help="Replace FILE if it exists.")
    p.set_defaults(func=cmd_explain)


def add_runs(sub: Any) -> None:
    """The ``runs`` command's sub-parser."""
    p = sub.add_parser("runs", help="List past runs.", description="List the runs in the user's runs folder.")
    p.add_argument("--json", action="store_true", help="Print the list as JSON.")
    p.set_defaults(func=cmd_runs)
