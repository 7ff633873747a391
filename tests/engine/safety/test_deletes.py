"""The engine deletes only what it made, provably: a temporary carries this process's token in its
name and is recorded (or lives in a folder of the engine's own); a cache entry carries the cache's
header. A file whose name merely looks like ours is never deleted (issue 20, reproductions 3 and 4)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from image_factory import make_image, make_image_folder
from safety_helpers import checksums
from test_fault_injection import _cli, _copy, _one_line_refusal, finished  # noqa: F401  (a fixture)

from dtl_engine import fileio
from dtl_engine.data.image_cache import ImageCache, image_cache_dir

HOUR_AGO = time.time() - 3600


def _aged(*paths: Path) -> None:
    for p in paths:
        os.utime(p, (HOUR_AGO, HOUR_AGO))


def _users_files_in_the_cache() -> list[Path]:
    """Files a user (or another tool) put into DTL Studio's cache folders, all old, some named like ours."""
    folder = image_cache_dir()
    shard = folder / "ab"
    shard.mkdir(parents=True, exist_ok=True)
    files = [shard / "notes.txt", shard / "holiday.img", shard / ("ab" + "0" * 38 + ".img"),
             shard / ("ab" + "1" * 38 + ".img.lock"), folder / "readme.img"]
    for p in files:
        p.write_bytes(b"the user's own bytes")
    _aged(*files)
    return files


def test_3_cache_info_and_clear_delete_only_the_caches_entries(tmp_path, capsys):
    users = _users_files_in_the_cache()
    photo = make_image(tmp_path / "photo.png", size=(40, 30))
    cache = ImageCache()
    cache.load(photo, 32)                               # one real entry
    ours = [p for p in image_cache_dir().rglob("*.img") if p not in users]
    assert len(ours) == 1
    before = checksums(image_cache_dir())
    code, _, err = _cli(["cache", "info"], capsys)
    assert code == 0, err
    assert checksums(image_cache_dir()) == before       # looking never deletes
    code, _, err = _cli(["cache", "clear"], capsys)
    assert code == 0, err
    assert not ours[0].exists()
    assert all(p.read_bytes() == b"the user's own bytes" for p in users)


def test_4_resume_on_a_folder_that_is_not_a_run_touches_nothing(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data10", {"a": 2, "b": 2}, size=(24, 24))
    lookalikes = [data / ".syncthing.img99.png.tmp", data / ".vacation.mp4.part", data / ".state.pt.k1ll3d.tmp"]
    for p in lookalikes:
        p.write_bytes(b"not the engine's")
    _aged(*lookalikes)
    before = checksums(data)
    code, _, err = _cli(["resume", str(data)], capsys)
    _one_line_refusal(code, err, "not a run folder")
    assert checksums(data) == before


def test_4_in_a_run_folder_only_the_engines_own_temporaries_are_removed(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    lookalike = run / ".state.pt.k1ll3d.tmp"            # the old, guessable pattern: not provably ours
    notes = run / ".my-notes.txt"
    for p in (lookalike, notes):
        p.write_bytes(b"the user's")
    # a killed writer of this run: the engine's name for a temporary of state.pt, another process's token
    killed = run / ".state.pt.dtl-0123456789ab-x1y2z3.tmp"
    killed.write_bytes(b"half a state")
    _aged(lookalike, notes, killed)
    from dtl_engine.runs.folder import RunFolder

    RunFolder(run).update_run(status="stopped")         # stopped after its last epoch: resume only finishes
    code, _, err = _cli(["resume", str(run)], capsys)
    assert code == 0, err
    assert not killed.exists()
    assert lookalike.read_bytes() == b"the user's" and notes.read_bytes() == b"the user's"


KILLED_EXPORT = """
import os, sys
from dtl_engine import fileio
part = fileio.reserve_beside(sys.argv[1])
print(part)
os._exit(9)                     # as kill -9: no clean-up runs
"""


def test_4_a_killed_exports_recorded_leftover_is_removed_a_lookalike_is_kept(finished, tmp_path):
    from dtl_engine.export import export_run

    out = tmp_path / "model.pt"
    done = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(out)], capture_output=True, text=True,
                          env={**os.environ})
    leftover = Path(done.stdout.strip())
    assert done.returncode == 9 and leftover.exists() and leftover.parent == tmp_path
    lookalike = tmp_path / ".model.pt.abcd1234.part"   # a user's file with a name like the old pattern
    lookalike.write_bytes(b"the user's")
    _aged(lookalike)
    export_run(finished, out, verify=False)
    assert not leftover.exists() and lookalike.read_bytes() == b"the user's" and out.exists()
    assert fileio.clean_leftovers() == []               # the ledger of the killed process is gone too

