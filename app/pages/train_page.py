"""Train page: start / pause / resume / stop a run and watch it live — a view of :class:`app.run_session.RunSession`.

The session owns the run (in this process, in torchrun, or another program's, followed from its
event log) and its state; this page draws the session's events and words its state. Curves are
redrawn by a 10 Hz timer in :class:`app.widgets.charts.TrainingCharts`, not once per batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget

from app import jobs
from app.pages.run_words import (SEARCH_BAR_STEPS, SEARCH_PHASE, best_so_far, is_weights_error, memory_line,
                                 past_bar, run_summary, state_texts, state_word, stop_keeps, what_runs, where_stopped)
from app.run_history import read_event_history, read_metrics
from app.run_life import RunState, has_model
from app.run_session import RunSession
from app.subprocess_run import can_launch, cuda_device_count, launch_command
from app.theme import state_color
from app.widgets.charts import TrainingCharts
from app.widgets.error_dialog import show_error
from app.widgets.log_view import LogView
from app.worker import describe_error
from dtl_engine.events import Event, RunEnded, describe, ended_line, first_model_headline
from dtl_engine.formatting import format_time_left
from dtl_engine.errors import DTLError, RunError

class TrainPage(QWidget):
    """Shows the Train step's run session: its buttons, progress, curves and log.

    ``gpu_count``: how many CUDA GPUs there are (default: asked of torch in the background);
    ``launch_args``: further ``train`` options of a several-GPU run (tests: a tiny backbone)."""

    status_changed = Signal()
    run_started = Signal(str)       # run folder
    run_finished = Signal(object)   # RunEnded
    run_failed = Signal(str)        # readable message
    weights_wanted = Signal(str)    # "random" or "file": a one-click answer to weights that could not be had

    def __init__(self, config_provider: Callable[[], Any], parent: QWidget | None = None, *,
                 train_fn: Callable[..., Any] | None = None,
                 resume_fn: Callable[..., Any] | None = None,
                 scan_provider: Callable[[], Any] | None = None,
                 gpu_count: Callable[[], int] | None = None, launch_args: Sequence[str] = ()) -> None:
        super().__init__(parent)
        self._config_provider = config_provider
        self._scan_provider = scan_provider or (lambda: None)     # the Data step's scan: no second scan
        self.session = RunSession(train_fn, resume_fn, self)
        self.controller = self.session.controller
        self.life = self.session.life       # the run's state; the window and steps read it
        self.last_error: tuple[str, str] | None = None
        self._phase = ""                    # what a live run does now, when more than "Training…"
        self._best_val: float | None = None
        self._first_acc: float | None = None     # the first model's accuracy (epoch 0), once it exists
        self._pending_batch: Any = None
        self._memory_samples = False
        self._setup_error = False           # the last failure was the settings' (or the weights'), not a run's
        self._last_stats: Any = None
        self._since_begin: list[Event] | None = None    # live points while a history is read, redrawn over it
        self._launch_args = list(launch_args)
        self._gpus = 0
        self._build_ui()
        self._progress_timer = QTimer(self)
        self._progress_timer.setInterval(100)
        self._progress_timer.timeout.connect(self._show_progress)
        self._progress_timer.start()
        self.session.event.connect(self._on_event)
        self.session.caught_up.connect(self._on_caught_up)
        self.session.changed.connect(self._refresh)
        self._refresh()
        if gpu_count is not None:
            self.set_gpu_count(gpu_count())
        else:
            jobs.submit(lambda _job: cuda_device_count(), kind="gpu-count", what="Counting the GPUs", context=self,
                        imports=("torch",), on_done=self.set_gpu_count)

    # --- layout ------------------------------------------------------------------
    def _button(self, text: str, slot: Callable[[], None], tip: str = "") -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.setMinimumWidth(84)
        button.clicked.connect(slot)
        return button

    def _build_ui(self) -> None:
        self.start_button = self._button("Start", self.start, "Start training with the chosen data and model (Ctrl+R)")
        self.gpus_button = self._button("Use all GPUs", self.start_on_all_gpus, "Train one run on every GPU of "
                                        "this machine (one process per GPU, torchrun); the run is followed here")
        self.gpus_button.setVisible(False)      # shown once more than one CUDA GPU is found
        self.pause_button = self._button("Pause", self.pause, "Hold the run after its current batch")
        self.resume_button = self._button("Resume", self.resume, "Continue a paused run, or a stopped one "
                                          "from its last completed epoch")
        self.stop_button = self._button("Stop", self.stop, "Stop after the current batch; the last checkpoint "
                                        "stays usable")
        self.state_label = QLabel()
        self.state_label.setTextFormat(Qt.TextFormat.RichText)
        self.state_label.setWordWrap(True)          # a long status wraps; it is never cut at the right
        self.state_label.setMinimumWidth(120)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.gpus_button, self.pause_button, self.resume_button, self.stop_button):
            buttons.addWidget(b)
        buttons.addSpacing(12)
        buttons.addWidget(self.state_label, 1)
        self.info_label = QLabel("Device, precision and trainable parameters appear when a run starts.")
        self.info_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setMinimumHeight(24)
        self._bar(0, 1, "Waiting to start")
        self.memory_label = QLabel("")
        self.memory_label.setStyleSheet("color: palette(placeholder-text);")
        self.charts = TrainingCharts(self)
        self.log_view = LogView()
        self.log_view.setPlaceholderText("Events and warnings of the run appear here.")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.charts)
        splitter.addWidget(self.log_view)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        for widget in (self.info_label, self.progress, self.memory_label):
            layout.addWidget(widget)
        layout.addWidget(splitter, 1)

    def _bar(self, value: int, maximum: int, text: str) -> None:
        self.progress.setRange(0, maximum)
        self.progress.setValue(value)
        self.progress.setFormat(text)

    # --- page contract -----------------------------------------------------------
    @property
    def run_dir(self) -> str | None: return self.session.run_dir         # the run live or last shown

    @property
    def last_result(self) -> RunEnded | None: return self.session.ended    # how the last run here ended

    def status(self) -> tuple[bool, str]:
        """(a finished run with a model is on screen?, one line about the run)."""
        ended = self.session.ended if self.life.state.ended else self.session.shown
        ready = ended is not None and ended.status == "finished" and (ended.epochs_done > 0 or has_model(ended.run_dir))
        text, line = self._texts()
        return ready, line or text

    def is_running(self) -> bool:
        """True while a run of this app trains: in its thread, or its torchrun until the launcher exits."""
        return self.session.holds_worker()

    # What the buttons and the Run menu may offer: the session answers.
    def following_elsewhere(self) -> bool: return self.session.following_elsewhere()
    def can_start(self) -> bool: return self.session.can_start()
    def can_pause(self) -> bool: return self.session.can_pause()
    def can_stop(self) -> bool: return self.session.can_stop()
    def can_resume(self) -> bool: return self.session.can_resume()

    def _config_or_fail(self) -> Any:
        try:
            config = self._config_provider()
        except Exception as exc:  # e.g. no data folder chosen yet
            self._fail_now(*describe_error(exc, "Preparing the run"))
            return None
        if config is None:
            self._fail_now("Choose an image folder and a model before training.", "")
        return config

    def start(self) -> None:
        """Start a new run from the current configuration (Ctrl+R)."""
        if not self.can_start():
            return
        self._leave_followed()
        config = self._config_or_fail()
        if config is None:
            return
        self._begin("Starting…")
        self.log(f"Starting a run: {what_runs(config)}")
        scan = self._scan_provider()
        same_folder = scan is not None and str(scan.root) == str(config.data_dir)
        self.session.start(config, scan if same_folder else None)

    def inputs_changed(self) -> None:
        """The data or the model settings changed: an error about the old settings no longer holds."""
        if self.life.state is RunState.FAILED and self._setup_error:
            self._setup_error = False
            self.session.clear_failure()
            self._bar(0, 1, "Waiting to start")

    def resume_run(self, run_dir: str) -> None:
        """Continue a stopped or interrupted run from its last checkpoint (its curves so far stay)."""
        if not self.can_start():
            return
        self._leave_followed()
        self._begin("Resuming…")
        self.session.resume_run(str(run_dir))
        done = self.session.epochs_done
        again = (f"at epoch {done + 1} (the {done} completed epoch(s) are kept)" if done else
                 "from the start: it stopped before its first epoch ended, so training starts again at epoch 1")
        self.log(f"Resuming the run in {Path(run_dir).name} {again}")
        self._read_history(str(run_dir), keep_log=True, upto=done)

    def pause(self) -> None:
        if self.can_pause():
            self.session.pause()
            self.log("Paused")

    def resume(self) -> None:
        """Resume: a paused run continues; a stopped or interrupted one continues from its last checkpoint."""
        if self.life.state is RunState.PAUSED:
            self.session.unpause()
            self.log("Resumed")
        elif (run_dir := self.session.resumable_run()) is not None:
            self.resume_run(run_dir)

    def stop(self) -> None:
        if self.can_stop():
            self.session.stop()
            self.log(f"Stop requested; the run keeps {stop_keeps(self.session.epochs_done, self._first_acc)}")

    def stop_and_wait(self, timeout_ms: int) -> bool:
        """Stop a run and wait for its thread or its processes (the window is closing)."""
        return self.session.stop_and_wait(timeout_ms)

    # --- runs in other processes ---------------------------------------------------
    def set_gpu_count(self, count: int) -> None:
        """How many CUDA GPUs this machine has: "Use all N GPUs" is offered from two on."""
        self._gpus = int(count or 0)
        self.gpus_button.setText(f"Use all {self._gpus} GPUs")
        self.gpus_button.setVisible(self._gpus > 1 and can_launch())

    def start_on_all_gpus(self) -> None:
        """Train the current configuration on every GPU: ``torchrun`` in a new run folder, followed here."""
        if not self.can_start() or self._gpus < 2:
            return
        self._leave_followed()
        config = self._config_or_fail()
        if config is None:
            return

        try:
            command, run_dir = launch_command(config, self._gpus, self._launch_args)
        except (DTLError, OSError) as exc:
            self._fail_now(*describe_error(exc, "Preparing the run"))
            return
        self._begin(f"Starting on {self._gpus} GPUs…")
        self.log(f"Starting a run on {self._gpus} GPUs (one process each): {what_runs(config)}, "
                 f"in {Path(run_dir).name}")
        self.session.start_launch(command, run_dir)

    def follow_run(self, run_dir: str) -> None:
        """Show a run that another program is training (command line, torchrun, a cluster) as it goes."""
        if not self.can_start():
            self.log(f"A run is training: {Path(run_dir).name} can be shown once it has ended")
            return
        self._leave_followed()
        self._begin("Following…")
        self.log(f"Following the run in {Path(run_dir).name} from its event log")
        self.session.follow(str(run_dir))

    def _leave_followed(self) -> None:
        """Stop following a run another program writes (it goes on there); the page shows something else."""
        follower = self.session.follower
        if self.session.leave_followed() and follower is not None:
            self.log(f"No longer following {Path(follower.run_dir).name}; it goes on training")

    def _on_caught_up(self, digest: Any) -> None:
        """What the followed run's log held so far: its curves, its log, where it stands."""
        if digest.steps or digest.epochs:
            self.charts.set_history(digest.epochs, digest.steps)
        if digest.lines:
            self.log_view.set_lines(digest.lines)
            self.log(f"Following the run in {self.session.name()} from its event log")
        accs = [float(e["val_acc"]) for e in digest.epochs if e.get("val_acc") is not None]
        self._best_val = max(accs) if accs else None
        if digest.last_batch is not None:       # its point is drawn already: only the progress line
            self._pending_batch = digest.last_batch
            self._show_progress()
        if digest.memory is not None:
            self._on_memory(digest.memory)

    def set_reference_memory(self, full_ft_bytes: int) -> None:
        """Estimate of full fine-tuning memory, drawn as a dashed line."""
        self.charts.set_reference_memory(full_ft_bytes)

    def load_history(self, run_dir: str) -> None:
        """Show a past run: its state in words, its curves and its log (read in the background)."""
        if not self.can_start():
            self.log(f"A run is training: {Path(run_dir).name} can be shown once it has ended")
            return
        self._reset_view()
        self.log_view.clear()
        self._leave_followed()
        shown = self.session.show_past(str(run_dir))
        self._read_history(str(run_dir), keep_log=False, upto=None)
        if shown is not None:
            self._bar(*past_bar(shown))
        self._refresh()                 # its best accuracy is known now

    def _read_history(self, run_dir: str, keep_log: bool, upto: int | None) -> None:
        """Draw a run's recorded curves and (unless ``keep_log``) its log; ``upto``: only its first epochs."""
        try:
            epochs = read_metrics(run_dir)
        except RunError as exc:
            self.log(f"⚠ {exc}")
            return
        if upto is not None:
            epochs = [e for e in epochs if int(e.get("epoch", 0)) < upto]
        self._best_val = max((e.get("val_acc") or 0.0 for e in epochs), default=None)
        self.charts.set_history(epochs, [])
        self._since_begin = self._since_begin or []
        self._redraw_live()
        # The per-step curves and the log come from the event log, read off the GUI thread.
        jobs.submit(lambda _job: read_event_history(run_dir), kind="history", what="Reading the run's log",
                    context=self, lane="history", supersede="history",
                    on_done=lambda out: self._history_loaded(run_dir, epochs, upto, keep_log, *out))

    def _history_loaded(self, run_dir: str, epochs: list[dict], upto: int | None, keep_log: bool,
                        steps: list[dict], lines: list[str], device: str | None) -> None:
        if self.session.run_dir != run_dir:
            return                          # another run is shown (or training) now
        if device and not self._since_begin:
            self.charts.set_memory_kind(device)     # what its memory curve measured
        if upto is not None:
            steps = [s for s in steps if s["x"] <= upto]      # the resumed run trains the rest again
        if steps:
            self.charts.set_history(epochs, steps)
            self._redraw_live()
        if lines and not keep_log:
            self.log_view.set_lines([f"The log of {Path(run_dir).name}:", *lines])
        self._since_begin = None            # drawn over the history: the charts hold the points from now on

    def _redraw_live(self) -> None:
        """Points a resumed run drew before its history arrived, drawn again over it."""
        for event in self._since_begin or []:
            (self.charts.add_batch if event.kind == "batch" else self.charts.add_epoch)(event.data)

    def log(self, message: str) -> None:
        self.log_view.add(message)

    def _reset_view(self) -> None:
        jobs.drop(self, "history")          # a past run's log still being read is not shown now
        self.charts.clear()
        self.last_error = None
        self._best_val = self._first_acc = self._last_stats = self._pending_batch = None
        self._setup_error = self._memory_samples = False
        self._since_begin = None
        self._phase = ""
        self.memory_label.setText("")

    def _begin(self, text: str) -> None:
        self._reset_view()
        self._phase = text
        self._bar(0, 0, text)               # busy until the engine reports its step count

    def _texts(self) -> tuple[str, str]:
        """(the state line, the shorter line of the step bar) of what the page shows now."""
        error = self.last_error[0] if self.last_error is not None else None
        return state_texts(self.session, self._phase, error, self._first_acc, self._best_val)

    def _refresh(self) -> None:
        """The session moved: the state line, the buttons and the step bar follow."""
        text, _line = self._texts()
        colour = state_color(state_word(self.session))
        self.state_label.setText(f"<span style='color:{colour}'><b>{text}</b></span>")
        self.start_button.setEnabled(self.can_start())
        self.gpus_button.setEnabled(self.can_start())
        self.pause_button.setEnabled(self.can_pause())
        self.resume_button.setEnabled(self.can_resume())
        self.stop_button.setEnabled(self.can_stop())
        self.status_changed.emit()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "state_label"):
            self._refresh()             # the state colour follows a light/dark switch

    def _fail_now(self, message: str, details: str) -> None:
        """The settings (or the weights they name) refused a run before it started."""
        self._setup_error = True
        self.session.fail_now()
        self._failed(message, details)

    def _failed(self, message: str, details: str) -> None:
        self.last_error = (message, details)
        self._pending_batch = None
        self._bar(0, 1, "Failed")
        self.log(f"✗ {message}")
        self._refresh()
        self.run_failed.emit(message)
        actions = [("Use random weights", lambda: self.weights_wanted.emit("random")),
                   ("Choose a weights file…", lambda: self.weights_wanted.emit("file"))]
        self.error_dialog = show_error(self, "Training could not run", message, details,
                                       actions if is_weights_error(details) else ())

    # --- engine events (main thread) --------------------------------------------
    def _on_event(self, event: Event) -> None:
        handler = {"run_started": self._on_started, "batch": self._on_batch, "epoch": self._on_epoch,
                   "memory": lambda e: self._on_memory(e.data), "search_progress": self._on_search,
                   "first_model": self._on_first_model, "finished": self._on_finished,
                   "failed": self._on_failed}.get(event.kind)
        if self._since_begin is not None and event.kind in ("batch", "epoch"):
            self._since_begin.append(event)
        if handler is not None:
            handler(event)
        elif line := describe(event):   # warnings, checkpoints, the search's choice, back-offs: their line
            self.log(line)

    def _on_started(self, event: Event) -> None:
        info = event.data
        self.info_label.setText(run_summary(info))
        self.charts.set_epochs(info.epochs)
        self.charts.set_steps_per_epoch(info.steps_per_epoch)
        self.charts.set_memory_kind(info.device)
        self._bar(info.start_epoch * info.steps_per_epoch, max(1, info.epochs * info.steps_per_epoch),
                  f"Epoch {info.start_epoch + 1}/{info.epochs}")
        self.log(describe(event))
        # a resumed run has kept epochs (their best read with its history); a new one has none yet
        self._phase = best_so_far(self._best_val) if info.start_epoch and self._best_val is not None else ""
        self._refresh()
        self.run_started.emit(str(info.run_dir))

    def _on_search(self, event: Event) -> None:
        """The search before epoch 1: a determinate bar, trial k of n, an ETA; its figures in the log as they come."""
        progress = event.data
        if not self.life.busy:
            return
        done = (f"images {progress.images_done} of {progress.images_total}" if progress.trial == 0
                else f"trial {progress.trial} of {progress.trials}")
        eta = ("" if progress.eta_seconds is None else
               f" · {format_time_left(progress.eta_seconds, progress.eta_low_seconds, progress.eta_high_seconds)}")
        self._bar(round(SEARCH_BAR_STEPS * progress.fraction), SEARCH_BAR_STEPS, f"{SEARCH_PHASE} — {done}{eta}")
        if self._phase != f"{SEARCH_PHASE}…":
            self._phase = f"{SEARCH_PHASE}…"
            self._refresh()
        if progress.note:
            self.log(describe(event))

    def _on_first_model(self, event: Event) -> None:
        """Epoch 0: the step-0 model exists (and is the run's best checkpoint) before epoch 1 begins."""
        self._first_acc = float(event.data.val_acc)
        self._best_val = max(self._best_val or 0.0, self._first_acc)
        self.log(describe(event))
        self._phase = first_model_headline(event.data.val_acc)
        self._refresh()

    def _on_batch(self, event: Event) -> None:
        # Cheap per batch: buffer the points; widgets follow at 10 Hz (_show_progress).
        self.charts.add_batch(event.data)
        self._pending_batch = event.data

    def _show_progress(self) -> None:
        stats, self._pending_batch = self._pending_batch, None
        if stats is None:
            return
        self._last_stats = stats
        epochs = self.session.started.epochs if self.session.started is not None else "?"
        # images/s: the smoothed figure the throughput chart draws, not one batch's jumpy rate
        left = format_time_left(stats.eta_seconds, stats.eta_low_seconds, stats.eta_high_seconds)
        self._bar(min(stats.total_steps, stats.global_step + 1), max(1, stats.total_steps),
                  f"Epoch {stats.epoch + 1}/{epochs} · step {stats.step + 1}/{stats.steps_per_epoch}"
                  f" · {self.charts.speed:.0f} images/s · {left}")
        if stats.memory_bytes and not self._memory_samples:
            self.memory_label.setText(memory_line("", stats.memory_bytes, stats.peak_memory_bytes))

    def _on_epoch(self, event: Event) -> None:
        self._show_progress()
        self.charts.add_epoch(event.data)
        self.log(describe(event))
        if event.data.is_best or self._best_val is None:
            self._best_val = max(self._best_val or 0.0, event.data.val_acc)
        if self.life.busy:                  # not "First model: 36.5 %" once 45.1 % is kept
            self._phase = best_so_far(self._best_val)
            self._refresh()

    def _on_memory(self, sample) -> None:
        self._memory_samples = True
        self.memory_label.setText(memory_line(sample.kind, sample.bytes_now, sample.bytes_peak))

    def _on_finished(self, event: Event) -> None:
        self._show_progress()
        ended: RunEnded = event.data
        self.charts.refresh()
        self.log(describe(event))
        if ended.stopped_early:
            total = ended.epochs or max(1, ended.epochs_done)
            self._bar(ended.epochs_done, max(1, total), f"{ended_line(ended)}{where_stopped(self._last_stats)}")
            if ended.epochs_done or self._first_acc is not None:
                self.log(f"Press Resume to continue it at epoch {ended.epochs_done + 1}"
                         + ("" if ended.epochs_done else " (the first model is kept)"))
            else:
                self.log("Nothing was trained yet: Resume starts again at epoch 1")
        else:
            top = max(1, self.progress.maximum())
            self._bar(top, top, f"Finished · {ended_line(ended).removeprefix('Finished: ')}")
        self._refresh()
        self.run_finished.emit(ended)

    def _on_failed(self, event: Event) -> None:
        if self.session.started is None:
            self._setup_error = True        # refused before it started (e.g. weights not downloadable)
        self._failed(event.data.message, event.data.details)
