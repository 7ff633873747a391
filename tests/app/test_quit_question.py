"""The question before closing on work that would be lost: what it says and offers, per kind of job."""
from __future__ import annotations

from app import jobs
from app.widgets.quit_question import LOSSES, question


def test_every_job_that_loses_work_has_its_own_words():
    """Each kind the app submits with loses_work=True is named in the question, not as 'background work'."""
    for kind in ("train", "classify-folder", "export", "doctor", "evaluate"):
        title, text, _can_stop = question([kind])
        assert kind in LOSSES and "background work" not in title


def test_a_stopped_classification_is_said_to_be_kept_as_partial():
    _title, text, can_stop = question(["classify-folder"])
    assert can_stop and "partial" in text


def test_an_export_alone_offers_only_to_wait():
    """An export cannot be cut short without losing its file: no Stop, and the question says why."""
    title, text, can_stop = question(["export"])
    assert not can_stop and "cannot be cut short" in text and title.startswith("A model is being exported")


def test_keep_spares_the_awaited_job_from_cancel_all(qtbot):
    import threading

    release = threading.Event()
    waited = jobs.submit(lambda _job: release.wait(5), kind="export", loses_work=True)
    other = jobs.submit(lambda _job: release.wait(5), kind="thumbnails")
    jobs.cancel_all(keep=[waited])
    assert other.is_cancelled and not waited.is_cancelled
    release.set()
    qtbot.waitUntil(lambda: not jobs.active_jobs(), timeout=5000)
