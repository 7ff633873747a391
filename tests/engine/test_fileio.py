"""The write guard and the delete-only-ours helpers of dtl_engine.fileio, one behaviour each."""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from dtl_engine import fileio
from dtl_engine.errors import WriteRefused
from dtl_engine.runs import folder as run_folder  # noqa: F401  (registers run.json as the run folder marker)


def test_check_target_resolves_relative_paths_and_links_before_judging(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"photo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WriteRefused, match="image folder"):
        fileio.check_target("images/../images/new.png", data_dirs=["images"])
    (tmp_path / "link.png").symlink_to(images / "a.png")
    with pytest.raises(WriteRefused, match="image folder"):
        fileio.check_target("link.png", overwrite=True, data_dirs=[str(images)])
    assert fileio.check_target("out.png", data_dirs=[str(images)]) == tmp_path.resolve() / "out.png"


def test_check_target_refuses_what_is_not_a_regular_file_whatever_overwrite_says(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "sub").mkdir()
    for name, kind in (("pipe", "named pipe"), ("sub", "folder")):
        with pytest.raises(WriteRefused, match=kind):
            fileio.check_target(tmp_path / name, overwrite=True)
    if os.path.exists("/dev/null"):
        with pytest.raises(WriteRefused, match="device"):
            fileio.check_target("/dev/null", overwrite=True)


def test_check_target_refuses_a_run_folder_except_the_file_named_as_its_own(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(WriteRefused, match="run folder"):
        fileio.check_target(run / "state.pt", overwrite=True)
    assert fileio.check_target(run / "doctor.csv", own=[run / "doctor.csv"])
    (tmp_path / "mine.csv").write_text("x")
    with pytest.raises(WriteRefused, match="already exists"):
        fileio.check_target(tmp_path / "mine.csv")


def test_while_a_folder_is_protected_no_writer_writes_into_it(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    with fileio.protecting(images):
        for write in (lambda: fileio.atomic_write_bytes(images / "x", b"1"),
                      lambda: fileio.reserve_beside(images / "y"),
                      lambda: fileio.create_exclusive(images / "z", b"1"),
                      lambda: fileio.make_folder(images / "sub")):
            with pytest.raises(WriteRefused):
                write()
        fileio.atomic_write_bytes(tmp_path / "x", b"1")      # outside: fine
    assert list(images.iterdir()) == []
    fileio.atomic_write_bytes(images / "x", b"1")            # no longer in use: the caller's own business


def test_temporary_names_carry_this_processs_token_and_only_they_count_as_leftovers(tmp_path):
    part = fileio.reserve_beside(tmp_path / "model.pt")
    assert part.name.startswith(f".model.pt.dtl-{fileio.PROCESS_TOKEN}-") and fileio.is_leftover_name(part.name)
    for lookalike in (".model.pt.abcd1234.part", ".syncthing.img99.png.tmp", ".x.dtl-XYZ.tmp"):
        assert not fileio.is_leftover_name(lookalike)
    assert fileio.clean_leftovers() == [] and part.exists()     # a live process's temporary stays
    fileio.discard(part)
    assert not part.exists()
    with pytest.raises(ValueError):
        fileio.discard(tmp_path / ".model.pt.dtl-0123456789ab-x.part")   # another process's: not ours to discard


def test_remove_signed_removes_only_a_file_that_starts_with_the_signature(tmp_path):
    ours, theirs = tmp_path / "a.img", tmp_path / "b.img"
    ours.write_bytes(b"DTLI....")
    theirs.write_bytes(b"PNG....")
    (tmp_path / "link.img").symlink_to(ours)
    assert not fileio.remove_signed(tmp_path / "link.img", b"DTL") and ours.exists()
    assert fileio.remove_signed(ours, b"DTL") and not fileio.remove_signed(theirs, b"DTL")
    assert not ours.exists() and theirs.exists()


def test_copy_new_never_replaces_and_same_content_compares_bytes(tmp_path):
    src = tmp_path / "src.png"
    src.write_bytes(b"abc" * 1000)
    dest = tmp_path / "dest.png"
    fileio.copy_new(src, dest)
    assert fileio.same_content(src, dest)
    dest.write_bytes(b"abd" * 1000)
    assert not fileio.same_content(src, dest)
    with pytest.raises(FileExistsError):
        fileio.copy_new(src, dest)
    assert dest.read_bytes() == b"abd" * 1000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_marked_folder_is_removed_an_unmarked_one_or_a_link_never(tmp_path):
    marked = fileio.make_marked_folder(tmp_path, ".cache-", ".mark")
    plain = tmp_path / ".cache-users"
    plain.mkdir()
    (tmp_path / ".cache-link").symlink_to(marked, target_is_directory=True)
    assert not fileio.remove_marked_folder(plain, ".mark") and plain.is_dir()
    assert not fileio.remove_marked_folder(tmp_path / ".cache-link", ".mark") and marked.is_dir()
    assert fileio.remove_marked_folder(marked, ".mark") and not marked.exists()


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    fileio.atomic_write_json(target, [1, 2])

    def full(fh, data):
        fh.write(bytes(data)[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio, "write_all", full)
    with pytest.raises(OSError, match="No space left"):
        fileio.atomic_write_json(target, [1, 2, 3])
    assert json.loads(target.read_text()) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_open_regular_refuses_fifo_device_and_folder_without_blocking(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "named pipe"), (Path("/dev/null"), "device"), (tmp_path, "folder")):
        started = time.monotonic()
        with pytest.raises(fileio.NotRegularFileError, match=kind):
            fileio.open_regular(path)
        assert time.monotonic() - started < 5
    regular = tmp_path / "a.bin"
    regular.write_bytes(b"abc")
    with fileio.open_regular(regular) as fh:
        assert fh.read() == b"abc"


def test_leftover_temporaries_are_removed_only_when_they_are_the_engines_and_old(tmp_path):
    old = time.time() - 3600
    killed = "dtl-0123456789ab-x1y2"                    # the engine's name, with a killed process's token
    keep_user = tmp_path / ".notes.txt"                  # the user's own hidden file
    keep_lookalike = tmp_path / ".metrics.json.x1y2.tmp"    # looks like a temporary, carries no token
    keep_fresh = tmp_path / f".state.pt.{killed}.tmp"   # a writer may be busy with it
    keep_other = tmp_path / f".notes.txt.{killed}.tmp"  # a temporary of a file the caller did not name
    gone = tmp_path / f".metrics.json.{killed}.tmp"
    gone_part = tmp_path / f".model.pt.{killed}.part"
    for p in (keep_user, keep_lookalike, keep_fresh, keep_other, gone, gone_part):
        p.write_bytes(b"x")
    for p in (keep_user, keep_lookalike, keep_other, gone, gone_part):
        os.utime(p, (old, old))
    removed = fileio.remove_leftovers(tmp_path, ["metrics.json", "model.pt", "state.pt"],
                                      older_than=time.time() - 60)
    assert sorted(p.name for p in removed) == sorted([gone.name, gone_part.name])
    assert all(p.exists() for p in (keep_user, keep_lookalike, keep_fresh, keep_other))
