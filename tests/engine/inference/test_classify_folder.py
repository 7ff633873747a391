"""Classify a folder: one CSV row and one copy per image, the input untouched, nothing overwritten."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from classify_builders import class_tree, model_file, read_rows  # noqa: F401  (a fixture)

from dtl_engine.cli import main as cli
from dtl_engine.inference.classify_folder import UNSURE, classify_folder
from dtl_engine.errors import DataError
from dtl_engine.inference.predict import predict


def checksums(root: Path) -> dict[str, str]:
    """Every entry below ``root``: file contents by SHA-256, folders and mtimes as they are."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = f"{digest}:{st.st_mtime_ns}:{st.st_mode}"
    return out


@pytest.mark.slow
def test_one_row_and_one_copy_per_image_input_unchanged(model_file, tmp_path):
    folder = class_tree(tmp_path)
    before = checksums(folder)
    out_csv, sorted_dir = tmp_path / "out" / "results.csv", tmp_path / "sorted"
    seen = []
    result = classify_folder(model_file, folder, out_csv, sort_into=sorted_dir, top_k=2,
                             progress=lambda done, total: seen.append((done, total)))
    assert checksums(folder) == before                                  # byte for byte, and not touched
    rows = read_rows(out_csv)
    images = sorted(str(p) for p in folder.rglob("*.png"))
    assert sorted(r["path"] for r in rows if not r["error"]) == images
    assert [r["path"] for r in rows if r["error"]] == [str(folder / "a" / "broken.jpg")]
    assert result.unreadable[0][0].endswith("broken.jpg") and "not an image" in result.unreadable[0][1]
    assert seen[-1] == (9, 9) and result.classified == 8 and result.total == 9

    # top-1 / top-k agree with predict(); each copy is in its class folder and identical to its source
    reference = predict(model_file, images, top_k=2)
    by_path = {r["path"]: r for r in rows}
    copies = [p for p in sorted_dir.rglob("*") if p.is_file()]
    assert len(copies) == 8
    for image, ranked in zip(images, reference):
        row = by_path[image]
        assert row["top1"] == ranked[0][0] and abs(float(row["confidence"]) - ranked[0][1]) < 1e-3
        assert row["top_k"].split(";")[1].split(":")[0] == ranked[1][0]
        copy = Path(row["copied_to"])
        assert copy.parent == sorted_dir / ranked[0][0]
        assert copy.read_bytes() == Path(image).read_bytes()
    assert result.summary().startswith("Classified 8 of 9 images")


def test_low_confidence_goes_to_unsure_and_copies_never_overwrite(model_file, tmp_path):
    folder = class_tree(tmp_path)
    sorted_dir = tmp_path / "sorted"
    result = classify_folder(model_file, folder, tmp_path / "r1.csv", sort_into=sorted_dir, min_confidence=0.9999)
    assert result.unsure == 8 and len(list((sorted_dir / UNSURE).iterdir())) == 8
    mine = sorted(p for p in (sorted_dir / UNSURE).iterdir() if "(" not in p.name)[0]
    mine.write_bytes(b"the user's own file under that name")
    first = {p: p.read_bytes() for p in sorted_dir.rglob("*") if p.is_file()}
    # a second pass into the same place reuses the identical copies and never replaces a different file:
    # that one image gets a copy beside it
    classify_folder(model_file, folder, tmp_path / "r2.csv", sort_into=sorted_dir, min_confidence=0.9999)
    assert all(p.read_bytes() == data for p, data in first.items())
    assert len(list((sorted_dir / UNSURE).iterdir())) == 9
    assert (sorted_dir / UNSURE / f"{mine.stem} (2){mine.suffix}").exists()


def test_refusals_never_write(model_file, tmp_path):
    folder = class_tree(tmp_path)
    before = checksums(folder)
    existing = tmp_path / "exists.csv"
    existing.write_text("keep me")
    with pytest.raises(DataError, match="already exists"):
        classify_folder(model_file, folder, existing)
    assert existing.read_text() == "keep me"
    with pytest.raises(DataError, match="never written into"):
        classify_folder(model_file, folder, folder / "results.csv")
    with pytest.raises(DataError, match="outside"):
        classify_folder(model_file, folder, tmp_path / "r.csv", sort_into=folder / "sorted")
    with pytest.raises(DataError, match="no folder"):
        classify_folder(model_file, tmp_path / "missing", tmp_path / "r.csv")
    assert checksums(folder) == before and not (tmp_path / "r.csv").exists()


def test_cancel_keeps_the_rows_done(model_file, tmp_path):
    folder = class_tree(tmp_path)
    calls = []
    result = classify_folder(model_file, folder, tmp_path / "r.csv", should_stop=lambda: len(calls) >= 3,
                             progress=lambda done, total: calls.append(done))
    partial = tmp_path / f"r (partial, 3 of {result.total}).csv"     # never a truncated file under r.csv
    assert result.cancelled and result.partial and Path(result.csv_path) == partial
    assert len(read_rows(partial)) == 3 and not (tmp_path / "r.csv").exists()
    assert "cancelled after 3" in result.summary() and "partial" in result.summary()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_a_named_pipe_is_listed_not_read(model_file, tmp_path):
    folder = class_tree(tmp_path)
    os.mkfifo(folder / "a" / "pipe.png")
    result = classify_folder(model_file, folder, tmp_path / "r.csv")       # would hang if it opened the pipe
    assert ("pipe.png", "not a regular file") in [(Path(p).name, r) for p, r in result.unreadable]


def test_cli_predict_folder(model_file, tmp_path, capsys):
    folder = class_tree(tmp_path)
    before = checksums(folder)
    out_csv, sorted_dir = tmp_path / "results.csv", tmp_path / "sorted"
    argv = ["predict", str(model_file), "--folder", str(folder), "--csv", str(out_csv),
            "--sort-into", str(sorted_dir), "--min-confidence", "0.2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "unreadable:" in out and "broken.jpg" in out and "Classified 8 of 9 images" in out
    assert len(read_rows(out_csv)) == 9 and len([p for p in sorted_dir.rglob("*") if p.is_file()]) == 8
    assert checksums(folder) == before
    assert cli.main(argv) == 2                               # the CSV exists now: refused, one sentence
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["predict", str(model_file), "--folder", str(folder)]) == 2
    assert cli.main(["predict", str(model_file)]) == 2


def test_two_classifications_into_one_csv_never_write_into_each_other(model_file, tmp_path):
    """A second classification to the same CSV, run while the first is under way, keeps its file intact."""
    folder = class_tree(tmp_path)
    out_csv = tmp_path / "results.csv"
    second: list = []

    def meanwhile(done: int, total: int) -> None:
        if done == 1 and not second:        # another window / terminal classifies into the same file
            second.append(classify_folder(model_file, folder, out_csv, top_k=1))

    with pytest.raises(DataError, match="appeared while classifying"):
        classify_folder(model_file, folder, out_csv, top_k=3, progress=meanwhile)
    rows = read_rows(out_csv)
    assert len(rows) == second[0].total                 # the second one's rows, each once, nothing appended
    assert all(";" not in r["top_k"] for r in rows)      # its own top-1 rows, not the first one's top-3
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
