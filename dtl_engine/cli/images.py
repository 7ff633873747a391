"""``scan``, ``doctor`` and ``cache``: the image folder, the check of a run's images, the decoded-image cache."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dtl_engine.cli.common import EXIT_INTERRUPTED, CtrlC, counting_bar
from dtl_engine.config import DEVICES
from dtl_engine.errors import RunError
from dtl_engine.formatting import format_bytes
from dtl_engine.listener import StopToken
from dtl_engine.runs.folder import RunFolder


def cmd_scan(args: argparse.Namespace) -> int:
    from dtl_engine.data import scan_folder

    bars: list[Any] = []    # created on the first report, so a folder refused at once prints no bar

    def progress(done: int, total: int | None) -> None:
        if not bars:
            bars.append(tqdm(desc="scanning", unit="file", dynamic_ncols=True, file=sys.stderr, leave=False,
                             disable=None))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
            bar.set_description("checking")
        bar.n = done
        bar.refresh()

    try:
        scan = scan_folder(args.folder, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(scan.to_dict(), indent=2))
        return 0
    print(scan.summary())
    width = max(len(c) for c in scan.classes)
    for name in scan.classes:
        print(f"  {name:<{width}}  {scan.counts.get(name, 0):>6}")
    for split, items in scan.items.items():
        if scan.layout == "split":
            print(f"{split}: {len(items)} images")
    for item in scan.skipped[:10]:
        print(f"skipped {item.path}: {item.reason}")
    if len(scan.skipped) > 10:
        print(f"... and {len(scan.skipped) - 10} more skipped files")
    for message in scan.warnings:
        print(f"warning: {message}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from dtl_engine.inference.doctor import DOCTOR_CSV, check_csv_destination, diagnose_run

    data_dir = RunFolder(args.run_dir).data_folder()
    # the run folder's own findings file is the engine's and is replaced; a file the user names is not
    own = Path(args.run_dir) / DOCTOR_CSV
    csv_target, csv_overwrite = args.csv or own, args.overwrite or not args.csv
    check_csv_destination(csv_target, csv_overwrite, data_dir, own)     # refuse before the long image pass
    if args.moves:
        check_csv_destination(args.moves, args.overwrite, data_dir)
    token = StopToken()
    bar, progress = counting_bar("checking images")
    with CtrlC(token):
        try:
            report = diagnose_run(args.run_dir, device=args.device, progress=progress,
                                  should_stop=lambda: token.stop_requested)
        except RunError:
            if not token.stop_requested:
                raise
            print("Stopped; nothing was written.", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            bar.close()
    csv_path = report.write_csv(csv_target, overwrite=csv_overwrite, data_dir=data_dir, own=own)
    print(report.summary())
    for finding in report.findings[:args.show]:
        print(f"{finding.kind}: {finding.path or finding.label}  {finding.detail}")
    print(f"Findings: {csv_path}")
    if args.moves:
        moves = report.write_moves_csv(args.moves, overwrite=args.overwrite, data_dir=data_dir)
        print(f"Suggested moves (nothing was moved): {moves}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from dtl_engine.data.image_cache import ImageCache, set_budget_mb

    if args.action == "clear":
        print(f"Cleared {format_bytes(ImageCache().clear())} of cached images.")
        return 0
    if args.action == "budget":
        if args.mb is None or args.mb < 0:
            raise RunError("Give the budget in MB, for example: cache budget 4096 (0 turns the cache off).")
        set_budget_mb(args.mb)
    info = ImageCache().info()
    print(f"Decoded-image cache: {info.entries} images, {format_bytes(info.bytes)} of "
          f"{format_bytes(info.budget_bytes)} budget" + (" (off)" if info.budget_bytes == 0 else ""))
    print(f"Folder: {info.folder}")
    return 0


def add_scan(sub: Any) -> None:
    """The ``scan`` command's sub-parser."""
    p = sub.add_parser("scan", help="Check an image folder: classes, image counts, skipped files.",
                       description="Scan an image folder (one sub-folder per class, or train/ val/ [test/]) "
                                   "and report its classes, usable images and skipped files.")
    p.add_argument("folder", metavar="DIR", help="The image folder.")
    p.add_argument("--json", action="store_true", help="Print the scan as JSON.")
    p.set_defaults(func=cmd_scan)


def add_doctor(sub: Any) -> None:
    """The ``doctor`` command's sub-parser."""
    p = sub.add_parser("doctor", help="Check a run's images: duplicates, leakage, likely mislabels, imbalance.",
                       description="Check every image of a run for exact and near duplicates (also across "
                                   "train/val/test), likely mislabeled images (judged out of sample on the frozen "
                                   "backbone's features), class imbalance and images far from their class. "
                                   "Only reads the image folder.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="Write the findings here (default: the run folder's findings file, replaced on each check).")
    p.add_argument("--moves", metavar="FILE", default=None,
                   help="Also write the suggested relabelings as a CSV of moves (nothing is moved).")
    p.add_argument("--overwrite", action="store_true", help="Replace the CSV files named above if they exist.")
    p.add_argument("--show", type=int, default=10, metavar="N", help="Print the first N findings.")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="Where to compute the image features.")
    p.set_defaults(func=cmd_doctor)


def add_cache(sub: Any) -> None:
    """The ``cache`` command's sub-parser."""
    p = sub.add_parser("cache", help="Show or clear the decoded-image cache, or set its disk budget.",
                       description="The decoded-image cache keeps every photo pre-resized in the per-user cache "
                                   "folder, so later epochs and runs skip the JPEG decode.")
    p.add_argument("action", choices=("info", "clear", "budget"), help="info, clear, or budget MB.")
    p.add_argument("mb", type=int, nargs="?", default=None, metavar="MB", help="The budget in MB (budget only).")
    p.set_defaults(func=cmd_cache)
