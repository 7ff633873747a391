"""Classify a whole folder of new images with an exported model: a CSV row per image, optional sorted copies.

The input folder is only read. Copies go to ``sort_into/<class>/`` (or ``sort_into/_unsure/``
below the confidence threshold) and never replace an existing file: a clashing name gets
`` (2)``, `` (3)``... The CSV is written beside its final name and moved in place at the end,
and an existing CSV is refused. Unreadable files get a row with their reason. The work
can be cancelled between images; the rows done so far are kept.
"""
from __future__ import annotations

import csv
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtl_engine.errors import DataError, ExportError
from dtl_engine.fileio import NAME_BYTES

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
        return text + f" Results: {self.csv_path}"


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


def _check_places(folder: Path, csv_path: Path, sort_into: Path | None) -> None:
    if not folder.is_dir():
        raise DataError(f"There is no folder at '{folder}'.")
    if csv_path.is_dir():
        raise DataError(f"'{csv_path}' is a folder; give a file name for the results, e.g. results.csv.")
    if csv_path.exists():
        raise DataError(f"'{csv_path}' already exists; choose another name for the results.")
    if _inside(csv_path, folder):
        raise DataError(f"The results are never written into the folder being classified ('{folder}').")
    if sort_into is not None:
        if _inside(sort_into, folder) or _inside(folder, sort_into):
            raise DataError(f"The sorted copies must go outside the folder being classified ('{folder}').")
        if sort_into.exists() and not sort_into.is_dir():
            raise DataError(f"'{sort_into}' is a file, not a folder for the sorted copies.")


def _safe_class_folder(name: str) -> str:
    cleaned = "".join("_" if ch in '/\\:*?"<>|' else ch for ch in name).strip(". ")
    return cleaned or "_class"


def copy_without_overwrite(source: Path, dest_dir: Path) -> Path:
    """Copy ``source`` into ``dest_dir`` under a name no existing file has (``name (2).ext``...)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    stem, suffix = source.stem, source.suffix
    for n in range(1, 10_000):
        dest = dest_dir / (source.name if n == 1 else f"{stem} ({n}){suffix}")
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out)
            shutil.copystat(source, dest)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest
    raise DataError(f"Cannot find a free file name for a copy of '{source.name}' in '{dest_dir}'.")


def classify_folder(model_path: str | os.PathLike[str], folder: str | os.PathLike[str],
                    csv_path: str | os.PathLike[str], *, sort_into: str | os.PathLike[str] | None = None,
                    min_confidence: float = 0.0, top_k: int = 3, progress: ProgressFn | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    on_notice: Callable[[str], None] | None = None) -> FolderResult:
    """Classify every image below ``folder`` with an exported model and write ``csv_path``.

    ``sort_into`` makes copies (never moves) in ``<sort_into>/<class>/``, or ``<sort_into>/_unsure/``
    when the top-1 probability is below ``min_confidence``. ``progress(done, total)`` is called after
    each file; ``should_stop()`` returning True cancels between files (the CSV keeps the rows done).

    Raises:
        DataError: a missing folder, an existing CSV, or an output place inside the input folder.
        ExportError: the model file cannot be loaded.
    """
    from dtl_engine.data.images import load_image
    from dtl_engine.export.common import image_to_uint8
    from dtl_engine.fileio import reserve_beside
    from dtl_engine.inference.predict import load_exported

    folder_p = Path(folder).expanduser().resolve()
    csv_p = Path(csv_path).expanduser().resolve()
    sort_p = Path(sort_into).expanduser().resolve() if sort_into is not None else None
    if not 0.0 <= min_confidence <= 1.0:
        raise DataError("The minimum confidence must be between 0 and 1.")
    if top_k < 1:
        raise ExportError("top_k must be at least 1.")
    _check_places(folder_p, csv_p, sort_p)
    exported = load_exported(model_path)
    if exported.notice and on_notice is not None:
        on_notice(exported.notice)
    k = min(top_k, len(exported.classes))
    skipped: list[tuple[str, str]] = []
    files = list_images(folder_p, skipped)
    result = FolderResult(str(csv_p), len(files), skipped=skipped)
    csv_p.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own: a second classification into the same CSV must not share (and truncate) this file.
    part = reserve_beside(csv_p)
    try:
        with open(part, "w", newline="", encoding="utf-8", errors=NAME_BYTES) as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for done, path in enumerate(files, start=1):
                if should_stop is not None and should_stop():
                    result.cancelled = True
                    break
                writer.writerow(_classify_one(path, exported, k, min_confidence, sort_p, result,
                                              load_image, image_to_uint8))
                if progress is not None:
                    progress(done, len(files))
        _publish(part, csv_p)
    finally:
        part.unlink(missing_ok=True)
    return result


def _classify_one(path: Path, exported: Any, k: int, min_confidence: float, sort_into: Path | None,
                  result: FolderResult, load_image: Any, image_to_uint8: Any) -> list[str]:
    import torch

    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):      # FIFOs, sockets, devices: reading could block or never end
            raise DataError("not a regular file")
        pixels = image_to_uint8(load_image(path)).unsqueeze(0)
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
        copied = str(copy_without_overwrite(path, target))
        result.copied += 1
    top = ";".join(f"{name}:{p:.4f}" for name, p in ranked)
    return [str(path), top1, f"{confidence:.4f}", top, copied, ""]


def _publish(part: Path, final: Path) -> None:
    """Move the finished CSV to its name, refusing if a file appeared there meanwhile."""
    from dtl_engine.fileio import publish_new

    try:
        publish_new(part, final)
    except FileExistsError:
        raise DataError(f"'{final}' appeared while classifying; the results were not written over it.") from None
