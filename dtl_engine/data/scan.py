"""Scan an image folder: find the classes, check every file cheaply, explain what was skipped.

Two layouts are understood:

* flat:  ``root/<class>/...images...`` (a validation share is split off later), and
* split: ``root/train/<class>/...`` + ``root/val/<class>/...`` (+ optional ``root/test/<class>/...``),
  used as given.

Images in nested sub-folders of a class belong to that class. Hidden files and
operating-system clutter (``.DS_Store``, ``Thumbs.db``, ``__MACOSX``...) are
ignored silently; every other file that cannot be used is listed with a reason.
The scan only reads: it never writes into the data folder.
"""
from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtl_engine.data.file_stamps import Stamp, stamp_of
from dtl_engine.errors import DataError
from dtl_engine.data.images import check_image

ProgressFn = Callable[[int, "int | None"], None]
StopFn = Callable[[], bool]

# Lower-case names of clutter that operating systems and tools leave in folders.
JUNK_FILES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"})
JUNK_DIRS = frozenset({"__macosx", "$recycle.bin", "system volume information", "__pycache__"})
# Hidden folders of tools, never meant as a class: passed over without a warning.
_TOOL_DIRS = frozenset({".git", ".svn", ".hg", ".ipynb_checkpoints", ".idea", ".vscode", ".trash", ".trashes",
                        ".thumbnails", ".spotlight-v100", ".fseventsd", ".dtl-cache"})
# Folder names (lower-case) recognised as the parts of the split layout.
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
SPLIT_ORDER = ("train", "val", "test")
# Warn when the largest class holds at least this many times the images of the smallest (the Data
# step, the scan and the data doctor all use this one rule).
IMBALANCE_RATIO = 3.0
# Warn about classes with fewer images than this.
FEW_IMAGES = 5
_PROGRESS_INTERVAL_S = 0.05


class ScanCancelled(DataError):
    """The scan was stopped on request (``should_stop`` returned True)."""


@dataclass(frozen=True)
class SkippedFile:
    """A file that will not be used, and why (a phrase a person understands)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class ScanResult:
    """What a folder holds: its layout, classes, usable images per split, and everything skipped."""

    root: str
    layout: str  # "flat" | "split"
    classes: list[str]
    items: dict[str, list[tuple[str, int]]]  # "all" (flat) or "train"/"val"/"test" (split)
    counts: dict[str, int]  # usable images per class, all splits together
    skipped: list[SkippedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored: int = 0  # hidden files and OS clutter passed over silently
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # the stamp (size, mtime, ctime in ns) of every usable image when it was scanned: a job given this scan
    # checks them instead of scanning again (see scan_check.scan_or_reuse).
    stamps: dict[str, Stamp] = field(default_factory=dict)
    # modification time (ns) of every folder listed, taken just before listing it: a folder whose
    # time differs later gained or lost an entry (an image or a class added, one removed)
    folder_stamps: dict[str, int] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.items.values())

    def summary(self) -> str:
        """One line for a status bar or a terminal."""
        text = (f"Found {self.num_images} images in {len(self.classes)} classes "
                f"({'train/val folders' if self.layout == 'split' else 'one folder per class'})")
        if self.skipped:
            text += f"; {len(self.skipped)} file{'s' if len(self.skipped) != 1 else ''} skipped"
        return text + "."

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root, "layout": self.layout, "classes": list(self.classes),
            "items": {k: [[p, y] for p, y in v] for k, v in self.items.items()},
            "counts": dict(self.counts), "skipped": [s.to_dict() for s in self.skipped],
            "warnings": list(self.warnings), "ignored": self.ignored,
            "split_counts": {k: dict(v) for k, v in self.split_counts.items()},
            "stamps": {p: list(v) for p, v in self.stamps.items()}, "folder_stamps": dict(self.folder_stamps),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanResult:
        return cls(
            root=d["root"], layout=d["layout"], classes=list(d["classes"]),
            items={k: [(str(p), int(y)) for p, y in v] for k, v in d["items"].items()},
            counts={k: int(v) for k, v in d["counts"].items()},
            skipped=[SkippedFile(s["path"], s["reason"]) for s in d.get("skipped", [])],
            warnings=list(d.get("warnings", [])), ignored=int(d.get("ignored", 0)),
            split_counts={k: {c: int(n) for c, n in v.items()} for k, v in d.get("split_counts", {}).items()},
            stamps={str(p): tuple(int(x) for x in v) for p, v in d.get("stamps", {}).items()},
            folder_stamps={str(p): int(t) for p, t in d.get("folder_stamps", {}).items()},
        )


def natural_key(text: str) -> list[Any]:
    """Sort key that puts 'img2' before 'img10' (and '2' before '10')."""
    parts = [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", text) if t]
    return parts + [(2, 0, text)]


def is_junk(name: str) -> bool:
    """True for hidden files/folders and OS clutter (.DS_Store, ._AppleDouble, Thumbs.db, __MACOSX...)."""
    low = name.lower()
    return name.startswith(".") or name.startswith("~$") or low in JUNK_FILES or low in JUNK_DIRS


def _hidden_on_windows(entry: os.DirEntry[str]) -> bool:
    # Windows marks hidden files with an attribute instead of a leading dot.
    if os.name != "nt":
        return False
    try:
        attrs = getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0)
    except OSError:
        return False
    return bool(attrs & (stat.FILE_ATTRIBUTE_HIDDEN | stat.FILE_ATTRIBUTE_SYSTEM))


class _Walker:
    """Lists candidate files, following folder links once each (no endless walk through link loops)."""

    def __init__(self, progress: ProgressFn | None, should_stop: StopFn | None) -> None:
        self.progress, self.should_stop = progress, should_stop
        self.visited: dict[str, str] = {}     # real path of each folder entered -> the path it was entered by
        self.ignored = 0
        self.found = 0
        self.skipped: list[SkippedFile] = []
        self.hidden_dirs: list[str] = []  # hidden folders passed over (class-level ones are named in a warning)
        self.folder_stamps: dict[str, int] = {}     # see ScanResult.folder_stamps
        self._last = 0.0

    def stop_check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise ScanCancelled("The scan was cancelled.")

    def tick(self, done: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last >= _PROGRESS_INTERVAL_S):
            self._last = now
            self.progress(done, total)

    def entries(self, folder: Path) -> list[os.DirEntry[str]]:
        """Non-junk entries of ``folder`` in natural order; unreadable folders are reported."""
        try:
            self.folder_stamps.setdefault(str(folder), os.stat(folder).st_mtime_ns)   # before the listing
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            self.skipped.append(SkippedFile(str(folder), _folder_reason(exc)))
            return []
        keep = []
        for e in entries:
            if is_junk(e.name) or _hidden_on_windows(e):
                self.ignored += 1
                if e.name.lower() not in JUNK_DIRS | _TOOL_DIRS and _is_dir(e):
                    self.hidden_dirs.append(e.path)
            else:
                keep.append(e)
        keep.sort(key=lambda e: natural_key(e.name))
        return keep

    def enter(self, folder: Path) -> bool:
        """Mark a folder visited by its real path; False if it was seen before (a link loop or duplicate)."""
        real = os.path.realpath(folder)
        if real in self.visited:
            return False
        self.visited[real] = str(folder)
        return True

    def seen_as(self, folder: Path) -> str | None:
        """The path by which the folder ``folder`` leads to was entered already, or None."""
        return self.visited.get(os.path.realpath(folder))

    def skip_repeat(self, folder: Path) -> None:
        """A link to a folder entered already (a loop, or a second way in) is named, never passed over silently."""
        self.skipped.append(SkippedFile(str(folder), f"a link to the folder '{self.seen_as(folder)}', which is "
                                                     "scanned already (its images are counted once, there)"))

    def files(self, folder: Path) -> Iterator[tuple[str, Stamp]]:
        """Yield (path, stamp) of every file below ``folder``, depth first, in natural order (see file_stamps)."""
        if not self.enter(folder):
            self.skip_repeat(folder)
            return
        stack = [folder]
        while stack:
            self.stop_check()
            current = stack.pop()
            subdirs = []
            for e in self.entries(current):
                try:
                    if e.is_dir():
                        if self.enter(Path(e.path)):
                            subdirs.append(Path(e.path))
                        else:
                            self.skip_repeat(Path(e.path))
                        continue
                    if e.is_file():
                        self.found += 1
                        if self.found % 256 == 0:  # huge flat folders: stay responsive to cancel
                            self.stop_check()
                        self.tick(self.found, None)
                        yield e.path, stamp_of(e.stat())
                        continue
                except OSError as exc:
                    self.skipped.append(SkippedFile(e.path, _folder_reason(exc)))
                    continue
                if e.is_symlink():
                    self.skipped.append(SkippedFile(e.path, "a broken link (its target does not exist)"))
                else:
                    self.skipped.append(SkippedFile(e.path, "not a regular file"))
            stack.extend(reversed(subdirs))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _folder_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    return f"cannot be read ({exc.strerror or exc})"


def _check_root(root: Path) -> None:
    if not root.exists():
        if root.is_symlink():
            raise DataError(f"The folder '{root}' is a broken link.")
        raise DataError(f"The folder '{root}' does not exist.")
    if not root.is_dir():
        raise DataError(f"'{root}' is a file, not a folder. Choose the folder that holds one sub-folder per class.")
    try:
        with os.scandir(root):
            pass
    except OSError as exc:
        raise DataError(f"The folder '{root}' cannot be read ({exc.strerror or exc}).") from exc


def _split_folders(root: Path) -> dict[str, Path] | None:
    """The train/val/test folders if ``root`` uses the split layout, else None."""
    found: dict[str, Path] = {}
    with os.scandir(root) as it:
        names = sorted((e for e in it if e.is_dir()), key=lambda e: natural_key(e.name))
    for e in names:
        key = SPLIT_ALIASES.get(e.name.lower())
        if key and key not in found:
            found[key] = Path(e.path)
    train = found.get("train")
    if train is None:
        return None
    # A class that happens to be called "train" holds images, not class folders.
    try:
        with os.scandir(train) as it:
            has_class_dirs = any(e.is_dir() and not is_junk(e.name) for e in it)
    except OSError:
        has_class_dirs = False
    return found if has_class_dirs else None


def scan_folder(root: str | os.PathLike[str], progress: ProgressFn | None = None,
                should_stop: StopFn | None = None) -> ScanResult:
    """Scan ``root`` and return its classes, usable images and skipped files.

    ``progress(done, total)`` is called now and then: first while files are
    being found (``total`` is None), then while they are checked. If
    ``should_stop()`` returns True the scan ends with :class:`ScanCancelled`.
    Raises :class:`DataError` with a sentence when the folder cannot be used.
    """
    root_path = Path(root).expanduser()
    _check_root(root_path)
    root_path = root_path.resolve()
    walker = _Walker(progress, should_stop)
    walker.tick(0, None, force=True)
    splits = _split_folders(root_path)
    layout = "split" if splits else "flat"
    extra_warnings: list[str] = []
    candidates, class_dirs, linked = _list_candidates(root_path, splits, walker, extra_warnings)
    good, stamps = _check_candidates(candidates, walker)
    del candidates
    result = _assemble(root_path, layout, class_dirs, good, walker, extra_warnings, linked)
    result.stamps, result.folder_stamps = stamps, walker.folder_stamps
    return result


def _list_candidates(root_path: Path, splits: dict[str, Path] | None, walker: _Walker, extra_warnings: list[str]
                     ) -> tuple[list[tuple[str, str, str, Stamp]], dict[str, set[str]], set[str]]:
    """Phase 1: the candidate files per (split, class) without opening them: (split, class, path, stamp) each,
    the splits each class folder is in, and the class folders left out as links to another class."""
    candidates: list[tuple[str, str, str, Stamp]] = []
    class_dirs: dict[str, set[str]] = {}
    walker.enter(root_path)
    root_entries = walker.entries(root_path)
    if splits:
        groups = [(name, walker.entries(folder)) for name, folder in splits.items() if walker.enter(folder)]
    else:
        groups = [("all", root_entries)]
    for e in root_entries:
        if not e.is_dir():
            walker.skipped.append(SkippedFile(e.path, "lies directly in the chosen folder, not in a class sub-folder"))
        elif splits and Path(e.path) not in splits.values():
            extra_warnings.append(f"The folder '{e.name}' is not train, val or test and was ignored.")
    linked: set[str] = set()    # class folders that are links to a folder another class holds
    for split_name, entries in groups:
        # real folders first: a class folder that links to another class never takes that class's images
        for e in sorted(entries, key=lambda e: e.is_symlink()):
            if not e.is_dir():
                if splits:
                    walker.skipped.append(SkippedFile(
                        e.path, f"lies directly in the '{split_name}' folder, not in a class sub-folder"))
                continue
            class_dirs.setdefault(e.name, set()).add(split_name)
            earlier = walker.seen_as(Path(e.path))
            if earlier is not None:
                linked.add(e.name)
                extra_warnings.append(f"The class folder '{e.name}' is a link to '{earlier}', which is scanned "
                                      f"already: its images are counted once, there, and '{e.name}' was left out.")
            for path, stamp in walker.files(Path(e.path)):
                candidates.append((split_name, e.name, path, stamp))
    extra_warnings += _hidden_class_warnings(root_path, splits, walker)
    return candidates, class_dirs, linked


def _hidden_class_warnings(root_path: Path, splits: dict[str, Path] | None, walker: _Walker) -> list[str]:
    """A hidden folder where class folders are: it would be a class but for its name."""
    class_parents = {str(root_path), *(str(folder) for folder in (splits or {}).values())}
    return [f"The hidden folder '{os.path.basename(hidden)}' was ignored; rename it without "
            "the leading dot to use its images as a class."
            for hidden in walker.hidden_dirs if os.path.dirname(hidden) in class_parents]


def _check_candidates(candidates: list[tuple[str, str, str, Stamp]], walker: _Walker
                      ) -> tuple[list[tuple[str, str, str]], dict[str, Stamp]]:
    """Phase 2: check each file's header (cheap; the full decode happens at load time)."""
    total = len(candidates)
    walker.tick(0, total, force=True)
    good: list[tuple[str, str, str]] = []
    stamps: dict[str, Stamp] = {}
    for i, (split_name, cls, path, stamp) in enumerate(candidates, 1):
        walker.stop_check()
        reason = check_image(path, stamp[0])
        if reason is None:
            good.append((split_name, cls, path))
            stamps[path] = stamp
        else:
            walker.skipped.append(SkippedFile(path, reason))
        walker.tick(i, total, force=(i == total))
    return good, stamps


def _assemble(root: Path, layout: str, class_dirs: dict[str, set[str]], good: list[tuple[str, str, str]],
              walker: _Walker, warnings: list[str], linked: set[str] | None = None) -> ScanResult:
    per_split: dict[str, dict[str, int]] = {}
    for split_name, cls, _ in good:
        per_split.setdefault(split_name, {}).setdefault(cls, 0)
        per_split[split_name][cls] += 1
    counts_all: dict[str, int] = {}
    for counts in per_split.values():
        for cls, n in counts.items():
            counts_all[cls] = counts_all.get(cls, 0) + n

    empty = sorted((c for c in class_dirs if counts_all.get(c, 0) == 0), key=natural_key)
    classes = sorted(counts_all, key=natural_key)
    if not classes:
        raise DataError(_no_images_message(root, class_dirs, walker.skipped))
    if len(classes) < 2:
        only = classes[0]
        many = len(empty) > 1
        extra = (f" (the folder{'s' if many else ''} {_names(empty)} hold{'' if many else 's'} no usable images)"
                 if empty else "")
        raise DataError(f"'{root.name}' has only one class folder with images ('{only}'){extra}; "
                        "a classifier needs at least two.")
    for c in empty:
        if c not in (linked or set()):          # a linked class has its own warning, naming both folders
            warnings.append(f"The class folder '{c}' has no usable images and was left out.")

    label = {c: i for i, c in enumerate(classes)}
    items: dict[str, list[tuple[str, int]]] = {}
    for split_name, cls, path in good:
        items.setdefault(split_name, []).append((path, label[cls]))
    if layout == "split":
        for s in SPLIT_ORDER[:2]:
            items.setdefault(s, [])
        items = {s: items[s] for s in SPLIT_ORDER if s in items}
    split_counts = {s: {c: per_split.get(s, {}).get(c, 0) for c in classes} for s in items}

    warnings.extend(_class_warnings(layout, classes, counts_all, split_counts))
    return ScanResult(root=str(root), layout=layout, classes=classes, items=items,
                      counts={c: counts_all[c] for c in classes}, skipped=walker.skipped,
                      warnings=warnings, ignored=walker.ignored, split_counts=split_counts)


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _no_images_message(root: Path, class_dirs: dict[str, set[str]], skipped: list[SkippedFile]) -> str:
    loose = [s for s in skipped if "not in a class sub-folder" in s.reason]
    if not class_dirs and loose:
        return (f"'{root.name}' holds files but no class sub-folders. Put the images of each class in its "
                f"own sub-folder, for example '{root.name}/cats' and '{root.name}/dogs'.")
    if not class_dirs:
        return f"'{root.name}' is empty: there are no class sub-folders with images in it."
    bad = [s for s in skipped if s not in loose]
    if bad:
        return (f"No usable images were found in '{root.name}': {len(bad)} file{'s' if len(bad) != 1 else ''} "
                f"could not be used (for example '{Path(bad[0].path).name}': {bad[0].reason}).")
    names = _names(sorted(class_dirs, key=natural_key))
    return f"No images were found in the class folders of '{root.name}' ({names})."


def _class_warnings(layout: str, classes: list[str], counts: dict[str, int],
                    split_counts: dict[str, dict[str, int]]) -> list[str]:
    out: list[str] = []
    train_counts = split_counts["train"] if layout == "split" else counts
    if layout == "split":
        for c in classes:
            if train_counts[c] == 0:
                out.append(f"The class '{c}' has no training images (only val/test); the model cannot learn it.")
        if "val" in split_counts:
            missing = [c for c in classes if split_counts["val"][c] == 0]
            if missing and len(missing) == len(classes):
                out.append("No validation images were found (no usable val folder); "
                           "a share of the training images will be held out instead.")
            elif missing:
                out.append(f"The class{'es' if len(missing) > 1 else ''} {_names(missing)} "
                           f"{'have' if len(missing) > 1 else 'has'} no validation images; "
                           "its accuracy cannot be measured.")
    for c in classes:
        n = train_counts[c]
        if 0 < n < FEW_IMAGES:
            what = "training image" if layout == "split" else "image"
            text = f"The class '{c}' has only {n} {what}{'s' if n != 1 else ''}; results for it will be unreliable"
            if layout == "flat" and n < 2:
                text += ", and it is too small to hold any back for validation"
            out.append(text + ".")
    present = {c: n for c, n in train_counts.items() if n > 0}
    if len(present) >= 2:
        big = max(present, key=lambda c: present[c])
        small = min(present, key=lambda c: present[c])
        ratio = present[big] / present[small]
        if ratio >= IMBALANCE_RATIO:
            out.append(f"The classes are imbalanced: '{big}' has {present[big]} images but '{small}' "
                       f"only {present[small]} ({ratio:.0f}×). The model may favour the large classes.")
    return out
