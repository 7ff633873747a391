"""Classify a whole folder of new images with an exported model: a CSV row per image, optional sorted copies.

The input folder is only read. Copies go to ``sort_into/<class>/`` (or ``sort_into/_unsure/``
below the confidence threshold) and never replace an existing file: a clashing name gets
`` (2)``, `` (3)``..., and an identical copy already there (a run that was killed, done again)
is recognised and reused. Each copy is made under a temporary name first, so an interrupted
copy never leaves a truncated image. Unreadable files get a row with their reason.

The CSV is written beside its final name and moved in place only when every file is done: an
existing CSV is refused (or, with ``overwrite``, replaced only then). A pass that is stopped,
or that cannot go on (a full disk), keeps the rows done in a file named so that nobody takes it
for the whole result: ``results (partial, 24 of 1797).csv`` beside ``results.csv``.
"""
from __future__ import annotations

import csv
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtl_engine.errors import DataError, ExportError
from dtl_engine.fileio import NAME_BYTES, check_target, publish, publish_new
from dtl_engine import fileio

UNSURE = "_unsure"
CSV_COLUMNS = ("path", "top1", "confidence", "top_k", "copied_to", "error")

ProgressFn = Callable[[int, int], None]


@dataclass
class FolderResult:
    """What :func:`classify_folder` did."""

    csv_path: str
    total: int                                   # image candidates found
    classified: int = 0
    counts: dict[str, int] = field(default_factory=dict)      # top-1 class -> images (copies per folder)
    unsure: int = 0                              # below min_confidence (copied to _unsure when sorting)
    copied: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)      # folders left out: (path, reason)
    cancelled: bool = False
    partial: bool = False                        # csv_path holds only the rows done (stopped or failed)

    def summary(self) -> str:
        """One or two sentences for a person."""
        done = self.classified + len(self.unreadable)
        text = f"Classified {self.classified} of {self.total} images"
        if self.cancelled:
            text += f" (cancelled after {done})"
        parts = ", ".join(f"{name} {n}" for name, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        text += f": {parts}." if parts else "."
        if self.unsure:
            text += f" {self.unsure} below the confidence threshold."
        if self.copied:
            text += f" {self.copied} copies made."
        if self.unreadable:
            text += f" {len(self.unreadable)} files could not be read."
        if self.skipped:
            text += f" {len(self.skipped)} linked folders were left out (already classified)."
        return text + (f" Results so far (partial): {self.csv_path}" if self.partial else f" Results: {self.csv_path}")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def list_images(folder: Path, skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """Every file below ``folder`` (hidden files and OS clutter skipped), in a stable order.

    Linked folders are followed, each real folder once: a link back to a folder already listed (a loop, or
    a second way into the same folder) is left out and named in ``skipped`` with the reason.
    """
    from dtl_engine.data.scan import is_junk, natural_key

    found: list[Path] = []
    seen = {os.path.realpath(folder): str(folder)}
    for root, dirs, files in os.walk(folder, followlinks=True):
        keep = []
        for name in sorted((d for d in dirs if not is_junk(d)), key=natural_key):
            path = os.path.join(root, name)
            real = os.path.realpath(path)
            if real in seen:
                if skipped is not None:
                    skipped.append((path, f"a link to the folder '{seen[real]}', which is classified already "
                                          "(its images are classified once, there)"))
                continue
            seen[real] = path
            keep.append(name)
        dirs[:] = keep
        for name in sorted(files, key=natural_key):
            if not is_junk(name):
                found.append(Path(root) / name)
    return found


def _check_places(folder: Path, csv_path: Path, sort_into: Path | None, overwrite: bool = False) -> None:
    if not folder.is_dir():
        raise DataError(f"There is no folder at '{folder}'.")
    if csv_path.is_dir():
        raise DataError(f"'{csv_path}' is a folder; give a file name for the results, e.g. results.csv.")
    if csv_path.exists() and not overwrite:
        raise DataError(f"'{csv_path}' already exists; choose another name for the results.")
    if _inside(csv_path, folder):
        raise DataError(f"The results are never written into the folder being classified ('{folder}').")
    check_target(csv_path, overwrite=overwrite, data_dirs=[folder], error=DataError)   # runs, devices, links
    if sort_into is not None:
        if _inside(sort_into, folder) or _inside(folder, sort_into):
            raise DataError(f"The sorted copies must go outside the folder being classified ('{folder}').")
        if sort_into.exists() and not sort_into.is_dir():
            raise DataError(f"'{sort_into}' is a file, not a folder for the sorted copies.")


def _safe_class_folder(name: str) -> str:
    cleaned = "".join("_" if ch in '/\\:*?"<>|' else ch for ch in name).strip(". ")
    return cleaned or "_class"


def copy_without_overwrite(source: Path, dest_dir: Path) -> Path:
    """Copy ``source`` into ``dest_dir`` under a name no existing file has (``name (2).ext``...).

    A file there that already holds the same bytes (an earlier pass) is the copy: nothing is duplicated.
    """
    fileio.make_folder(dest_dir)
    stem, suffix = source.stem, source.suffix
    for n in range(1, 10_000):
        dest = dest_dir / (source.name if n == 1 else f"{stem} ({n}){suffix}")
        if os.path.lexists(dest):
            if fileio.same_content(source, dest):
                return dest
            continue
        try:
            fileio.copy_new(source, dest)
        except FileExistsError:
            continue
        return dest
    raise DataError(f"Cannot find a free file name for a copy of '{source.name}' in '{dest_dir}'.")


class _CopyFailed(Exception):
    def __init__(self, source: Path, dest_dir: Path, exc: OSError) -> None:
        super().__init__(f"The copy of '{source}' into '{dest_dir}' failed: {exc.strerror or exc}")


def classify_folder(model_path: str | os.PathLike[str], folder: str | os.PathLike[str],
                    csv_path: str | os.PathLike[str], *, sort_into: str | os.PathLike[str] | None = None,
                    min_confidence: float = 0.0, top_k: int = 3, progress: ProgressFn | None = None,
                    should_stop: Callable[[], bool] | None = None, overwrite: bool = False,
                    on_notice: Callable[[str], None] | None = None) -> FolderResult:
    """Classify every image below ``folder`` with an exported model and write ``csv_path``.

    ``sort_into`` makes copies (never moves) in ``<sort_into>/<class>/``, or ``<sort_into>/_unsure/``
    when the top-1 probability is below ``min_confidence``. ``progress(done, total)`` is called after
    each file; ``should_stop()`` returning True cancels between files (the rows done are kept in a
    partial CSV, see the module doc). ``overwrite`` replaces an existing CSV, once the new one is complete.

    Raises:
        DataError: a missing folder, an existing CSV, an output place inside the input folder, or a copy
            that failed (a full disk: the message names the file and the partial CSV).
        ExportError: the model file cannot be loaded.
    """
    from dtl_engine.inference.predict import load_exported, loading_side

    folder_p = Path(folder).expanduser().resolve()
    csv_p = Path(csv_path).expanduser().resolve()
    sort_p = Path(sort_into).expanduser().resolve() if sort_into is not None else None
    if not 0.0 <= min_confidence <= 1.0:
        raise DataError("The minimum confidence must be between 0 and 1.")
    if top_k < 1:
        raise ExportError("top_k must be at least 1.")
    _check_places(folder_p, csv_p, sort_p, overwrite)
    exported = load_exported(model_path)
    if exported.notice and on_notice is not None:
        on_notice(exported.notice)
    side = loading_side(exported)
    k = min(top_k, len(exported.classes))
    skipped: list[tuple[str, str]] = []
    files = list_images(folder_p, skipped)
    result = FolderResult(str(csv_p), len(files), skipped=skipped)
    fileio.make_folder(csv_p.parent)
    failure: _CopyFailed | None = None
    rows = 0
    with fileio.protecting(folder_p):           # no copy, no CSV, ever lands among the images
        # A name of its own (recorded): a second classification into the same CSV never shares this file,
        # and a killed pass leaves a temporary the next one removes, never a truncated CSV.
        part = fileio.reserve_beside(csv_p)
        try:
            with fileio.open_temp(part, "w", newline="", encoding="utf-8", errors=NAME_BYTES) as fh:
                writer = csv.writer(fh)
                writer.writerow(CSV_COLUMNS)
                for done, path in enumerate(files, start=1):
                    if should_stop is not None and should_stop():
                        result.cancelled = True
                        break
                    try:
                        row = _classify_one(path, exported, k, min_confidence, sort_p, result, side)
                    except _CopyFailed as exc:
                        failure = exc
                        break
                    writer.writerow(row)
                    rows += 1
                    if progress is not None:
                        progress(done, len(files))
            if result.cancelled or failure is not None:
                result.csv_path, result.partial = str(_publish_partial(part, csv_p, rows, len(files))), True
            else:
                _publish(part, csv_p, overwrite)
        finally:
            fileio.discard(part)
    if failure is not None:
        raise DataError(f"{failure}. The {rows} rows done are kept in '{result.csv_path}'.")
    return result


def _classify_one(path: Path, exported: Any, k: int, min_confidence: float, sort_into: Path | None,
                  result: FolderResult, side: int | None) -> list[str]:
    import torch

    from dtl_engine.data.model_input import load_pixels

    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):      # FIFOs, sockets, devices: reading could block or never end
            raise DataError("not a regular file")
        pixels = load_pixels(path, side).unsqueeze(0)
    except (DataError, OSError) as exc:
        reason = str(exc) if isinstance(exc, DataError) else (exc.strerror or str(exc))
        result.unreadable.append((str(path), reason))
        return [str(path), "", "", "", "", reason]
    from dtl_engine.inference.predict import NotFiniteError

    try:
        probs = exported(pixels)[0]
    except NotFiniteError as exc:       # no class can be read from it: a row with the reason, never a copy
        result.unreadable.append((str(path), str(exc)))
        return [str(path), "", "", "", "", str(exc)]
    values, indices = torch.topk(probs, k)
    ranked = [(exported.classes[int(i)], float(v)) for v, i in zip(values, indices)]
    top1, confidence = ranked[0]
    result.classified += 1
    result.counts[top1] = result.counts.get(top1, 0) + 1
    sure = confidence >= min_confidence
    result.unsure += 0 if sure else 1
    copied = ""
    if sort_into is not None:
        target = sort_into / (_safe_class_folder(top1) if sure else UNSURE)
        try:
            copied = str(copy_without_overwrite(path, target))
        except OSError as exc:          # a full disk, a folder that went away: named, and the rows done kept
            raise _CopyFailed(path, target, exc) from exc
        result.copied += 1
    top = ";".join(f"{name}:{p:.4f}" for name, p in ranked)
    return [str(path), top1, f"{confidence:.4f}", top, copied, ""]


def _publish(part: Path, final: Path, overwrite: bool) -> None:
    """Move the finished CSV to its name, refusing if a file appeared there meanwhile (unless ``overwrite``)."""
    try:
        publish(part, final, overwrite)
    except FileExistsError:
        raise DataError(f"'{final}' appeared while classifying; the results were not written over it.") from None


def _publish_partial(part: Path, final: Path, rows: int, total: int) -> Path:
    """Keep the rows done as ``<name> (partial, <rows> of <total>)<suffix>`` beside ``final``; never over a file."""
    for n in range(1, 1000):
        name = f"{final.stem} (partial, {rows} of {total}){'' if n == 1 else f' ({n})'}{final.suffix}"
        try:
            publish_new(part, final.with_name(name))
            return final.with_name(name)
        except FileExistsError:
            continue
    raise DataError(f"Cannot find a free name for the partial results beside '{final}'.")
