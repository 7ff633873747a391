"""Open the window, start one kind of background job, close the window while it runs, exit.

Run as ``python close_during_job.py KIND WORKDIR [stop|wait|keep]`` (see test_close_during_background.py);
the last word answers the window's question when the job would lose work (default: stop).
The job's engine function is replaced by a slow stand-in that writes ``WORKDIR/out.bin``
chunk by chunk (not atomically, on purpose): a close that does not wait for the job
leaves that file short. The stand-in records what happened in ``WORKDIR/log.txt``.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

KIND, WORK = sys.argv[1], Path(sys.argv[2])
CHOICE = sys.argv[3] if len(sys.argv) > 3 else "stop"      # the answer to "quit although work is lost?"
# 30 kB written over about 1.5 s; the export (with its check in a fresh process) takes longer:
# 6 s outlasts any fixed wait the window might do before it goes away.
CHUNKS, CHUNK = (120 if KIND == "export" else 30), b"x" * 1000
entered = threading.Event()


def log(line: str) -> None:
    with open(WORK / "log.txt", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def slow_write(*_args, **_kwargs):
    """An uninterruptible job: writes its file to the end, however the window closes."""
    entered.set()
    log("entered")
    with open(WORK / "out.bin", "wb") as f:
        for _ in range(CHUNKS):
            f.write(CHUNK)
            f.flush()
            time.sleep(0.05)
    log("wrote")
    return WORK


def slow_export(*args, **kwargs):
    """An export: the file written to the end, then an answer the Export step can show."""
    slow_write(*args, **kwargs)
    return SimpleNamespace(path=str(WORK / "out.bin"), verified=False, message="Written.", details=lambda: [])


def slow_scan(root, progress=None, should_stop=None):
    """A cancellable job: stops at the next check once it is cancelled."""
    from dtl_engine.errors import DataError

    entered.set()
    log("entered")
    for i in range(400):
        if should_stop is not None and should_stop():
            log("cancelled")
            raise DataError("The scan was cancelled.")
        if progress is not None:
            progress(i, 400)
        time.sleep(0.05)
    log("ran to the end")
    raise DataError("not cancelled")


def slow_thumbnail(path, side=96):
    from PySide6.QtGui import QImage

    entered.set()
    log("thumbnail")
    time.sleep(0.1)
    return QImage()


def slow_train(config, listener=None, token=None, run_dir=None, scan=None):
    """A run that trains until it is asked to stop, then writes its checkpoint."""
    entered.set()
    log("entered")
    deadline = time.monotonic() + 60
    while not token.stop_requested and time.monotonic() < deadline:
        time.sleep(0.02)
    log("stop requested" if token.stop_requested else "never stopped")
    slow_write()
    return SimpleNamespace(run_dir=str(WORK), status="stopped", epochs_done=0, best_epoch=None,
                           best_val_acc=None, report=None)


def slow_classify(model, folder, csv_path, *, sort_into=None, min_confidence=0.0, progress=None,
                  should_stop=None, **_kwargs):
    """Classifying a folder: a row per image until it is asked to stop (the rows done are kept)."""
    rows = 0
    with open(csv_path, "w", encoding="utf-8") as f:
        for i in range(400):
            if should_stop is not None and should_stop():
                log("stopped")
                break
            f.write(f"image {i}\n")
            f.flush()
            rows += 1
            if rows == 1:                   # the window closes once a row is done: there are rows to keep
                entered.set()
                log("entered")
            if progress is not None:
                progress(rows, 400)
            time.sleep(0.05)
    log(f"wrote {rows} rows")
    return SimpleNamespace(csv_path=str(csv_path), total=400, classified=rows, counts={}, unsure=0, copied=0,
                           unreadable=[], cancelled=rows < 400)


def real_train_with_workers():
    """The real engine on a tiny model with two loader workers; "entered" once epoch 1 is saved."""
    import dtl_engine.data.loader as loader
    from run_fixtures import tiny_train

    loader.available_cores = lambda: 3          # automatic worker count: two, on any machine
    train = tiny_train()

    def run(config, listener=None, token=None, **kwargs):
        saved = listener.checkpoint_saved

        def checkpoint_saved(path, epoch):
            saved(path, epoch)
            log(f"checkpoint {path}")
            entered.set()
        listener.checkpoint_saved = checkpoint_saved
        result = train(config, listener=listener, token=token, **kwargs)
        log(f"run ended {result.status}")
        return result
    return run


def image_folder() -> Path:
    from PIL import Image

    root = WORK / "images"
    for name, colour in (("cats", (200, 80, 40)), ("dogs", (40, 120, 200))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (16, 16), colour).save(root / name / f"{i}.png")
    return root


def main() -> int:
    import dtl_engine.data
    import dtl_engine.data.sample
    import dtl_engine.sizing.memory_probe
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    import app.pages.export_page as export_page
    import app.pages.results_page as results_page
    import app.pages.runs_page as runs_page
    import app.widgets.class_table as class_table
    import app.widgets.classify_folder_dialog as classify_folder_dialog
    import app.widgets.run_compare as run_compare
    import app.widgets.why_panel as why_panel
    import app.widgets.doctor_panel as doctor_panel
    from app.main import run_event_loop
    from app.main_window import MainWindow
    from app.settings import Settings
    from app.theme import apply_theme

    qt = QApplication([sys.argv[0]])
    apply_theme(qt)
    settings = Settings()
    settings.set_last_config({"backbone": "test_vit", "weights": "random", "epochs": 1, "batch_size": 4})
    if KIND == "scan":
        dtl_engine.data.scan_folder = slow_scan
    elif KIND == "sample":
        dtl_engine.data.sample.ensure_sample_dataset = slow_write
    elif KIND == "estimate":
        dtl_engine.sizing.memory_probe.estimate_memory = slow_write
    elif KIND == "evaluate":
        results_page.load_evaluation = slow_write
    elif KIND == "explain":
        results_page.compute_heatmap = slow_write
    elif KIND == "doctor":
        doctor_panel.run_doctor = slow_write
    elif KIND == "export":
        export_page.run_export = slow_export
    elif KIND == "predict":
        export_page.run_predict = slow_write
    elif KIND == "thumbnails":
        class_table.read_thumbnail = slow_thumbnail
    elif KIND == "classify-folder":
        classify_folder_dialog.classify_folder = slow_classify
    elif KIND == "explain-try":
        why_panel.explain_in_background = slow_write
    elif KIND == "compare-runs":
        run_compare._compare = slow_write
    elif KIND == "list-runs":             # the window lists the past runs as it opens
        runs_page.list_runs = lambda: slow_write() and []
    elif KIND == "train-workers":
        settings.set_last_config({"backbone": "test_vit", "weights": "random", "epochs": 200, "batch_size": 4,
                                  "image_size": 32, "augment": "none", "device": "cpu", "precision": "fp32"})
    train_fn = slow_train if KIND == "train" else real_train_with_workers() if KIND == "train-workers" else None
    window = MainWindow(settings, train_fn=train_fn)
    answers = [None if CHOICE == "keep" else CHOICE, "stop"]   # "keep": the window stays; the next close stops

    def confirm_quit(losing):
        log("asked: " + ",".join(j.kind for j in losing))
        answer = answers.pop(0)
        if answer is None:                  # kept working: the job goes on; a moment later the user quits
            log("kept working")
            QTimer.singleShot(300, window.close)
        return answer
    window.confirm_quit = confirm_quit
    window.show()

    if KIND == "scan":
        window.data_page.open_folder(str(WORK))
    elif KIND == "sample":
        window.data_page.use_sample()
    elif KIND.startswith("train"):
        if KIND == "train-workers":
            from run_fixtures import make_image_folder
            window.data_page.open_folder(str(make_image_folder(WORK / "images")))
        else:
            window.data_page.open_folder(str(image_folder()))
        ready = lambda: window.data_page.data_root() is not None and not window.data_page.is_scanning()  # noqa: E731
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline:
            qt.processEvents()
            time.sleep(0.02)
        window.start_training()
    elif KIND == "evaluate":
        window.results_page.show_run(str(WORK))
    elif KIND == "explain":                 # "Why?" on one image of the Results gallery
        window.results_page.run_dir = str(WORK)
        window.results_page.explain({"path": str(WORK / "a.png"), "true": "a", "predicted": "b", "confidence": 0.5})
    elif KIND == "doctor":                  # the Results page's data check
        window.results_page.doctor.set_run(str(WORK))
        window.results_page.doctor.start()
    elif KIND == "export":
        window.export_page.set_run(str(WORK))
        window.export_page.path_edit.setText(str(WORK / "model.pt"))
        window.export_page.export()
    elif KIND == "predict":
        window.export_page.last_result = SimpleNamespace(path=str(WORK / "model.pt"))
        window.export_page.try_images([str(WORK / "a.png")])
    elif KIND == "classify-folder":
        dialog = window.export_page.open_classify_folder()
        dialog.folder_edit.setText(str(image_folder()))
        dialog.model_edit.setText(str(WORK / "model.pt"))
        dialog.csv_edit.setText(str(WORK / "out.csv"))
        dialog.start()
    elif KIND == "explain-try":             # "Why?" on an image tried on the Export step
        window.export_page.why_panel.explain(str(WORK), str(WORK / "a.png"))
    elif KIND == "compare-runs":
        run_compare.RunCompareDialog([str(WORK), str(WORK)], window.runs_page).show()
    elif KIND == "thumbnails":
        rows = [{"name": f"c{i}", "count": 1, "train": 1, "val": 0, "first": str(WORK / f"{i}.png")}
                for i in range(100)]
        window.data_page.class_table.set_classes(rows)

    def close_when_entered() -> None:
        if entered.is_set():
            log("closing")
            if KIND == "train-workers":
                import multiprocessing
                log("workers " + " ".join(str(p.pid) for p in multiprocessing.active_children()))
            window.close()
        else:
            QTimer.singleShot(20, close_when_entered)

    QTimer.singleShot(0, close_when_entered)
    QTimer.singleShot(120_000, qt.quit)     # a job that never starts must not hang the test
    status = run_event_loop(qt)
    log(f"exit {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
