"""Claiming a folder for a new run (runs/claim.py): never one overlapping the images, never a non-empty one."""
from __future__ import annotations

import pytest

from dtl_engine.errors import RunError
from dtl_engine.runs import folder as run_folder
from dtl_engine.runs.claim import claim_new


def test_claim_refuses_a_non_empty_folder_and_one_overlapping_the_data(tmp_path):
    data = tmp_path / "data"
    (data / "cats").mkdir(parents=True)
    for out in (data, data / "runs", tmp_path):
        with pytest.raises(RunError, match="image folder"):
            claim_new(out, data, "test_vit", "dtl")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my own notes")
    with pytest.raises(RunError, match="not empty"):
        claim_new(mine, data, "test_vit", "dtl")
    assert (mine / "config.json").read_text() == "my own notes"
    claim = claim_new(tmp_path / "fresh", data, "test_vit", "dtl")
    assert claim.created and (tmp_path / "fresh" / run_folder.LOCK).exists()
    claim.discard()
    assert not (tmp_path / "fresh").exists()
