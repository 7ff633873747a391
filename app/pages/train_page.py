"""Train page: start / pause / resume / stop a run and watch it live.

The run happens on a QThread (:class:`app.worker.RunController`); this page
only reacts to its signals. A run another process writes (the command line,
``torchrun``, a cluster job, or this page's "Use all N GPUs") sends the same
signals through :class:`app.run_follower.RunFollower`, read from its event log.
Curves are redrawn by a 10 Hz timer in :class:`app.widgets.charts.TrainingCharts`,
not once per batch.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QSplitter, QVBoxLayout, QWidget)

from app import jobs
from app.run_follower import RunFollower
from app.run_history import describe, first_model_headline, read_event_history, read_metrics
from app.run_life import NOT_TRAINED, RunLife, RunState, epochs_done
from app.subprocess_run import SubprocessRun, can_launch, cuda_device_count, remove_if_empty, torchrun_command
from app.theme import state_color
from app.widgets.charts import TrainingCharts
from app.widgets.error_dialog import show_error
from app.worker import RunController, describe_error
from dtl_engine.formatting import format_bytes, format_count, format_duration, format_eta


SEARCH_PHASE = "Choosing the learning rate and augmentation"
SEARCH_BAR_STEPS = 1000         # the search's bar: its fraction in thousandths


class TrainPage(QWidget):
    """Runs training in the background and draws its progress."""

    status_changed = Signal()
    run_started = Signal(str)       # run folder
    run_finished = Signal(object)   # RunResult
    run_failed = Signal(str)        # readable message

    def __init__(self, config_provider: Callable[[], Any], parent: QWidget | None = None, *,
                 train_fn: Callable[..., Any] | None = None,
                 resume_fn: Callable[..., Any] | None = None,
                 scan_provider: Callable[[], Any] | None = None,
                 gpu_count: Callable[[], int] | None = None, launch_args: Sequence[str] = ()) -> None:
        """``gpu_count``: how many CUDA GPUs there are (default: asked of torch in the background);
        ``launch_args``: further ``train`` options of a several-GPU run (tests: a tiny backbone)."""
        super().__init__(parent)
        self._config_provider = config_provider
        self._scan_provider = scan_provider or (lambda: None)     # the Data step's scan: no second scan
        self.controller = RunController(train_fn, resume_fn, self)
        self.run_dir: str | None = None
        self.last_result: Any = None
        self.last_error: tuple[str, str] | None = None
        self._epochs = 0
        self.life = RunLife(self)       # the one owner of this run's state; the window and steps read it
        self._status_text = "Not started. Press Start (Ctrl+R) to train."
        self._step_line = ""
        self._last_progress = ""
        self._best_val: float | None = None
        self._first_acc: float | None = None     # the first model's accuracy (epoch 0), once it exists
        self._pending_batch: Any = None
        self._memory_samples = False
        self._trained = False           # the run on screen completed at least one epoch
        self._setup_error = False       # the last failure was the settings', before any run started
        self._last_stats: Any = None
        self._follower: RunFollower | None = None     # a run read from its event log
        self._launch: SubprocessRun | None = None     # this page's torchrun, while it runs
        self._launch_args = list(launch_args)
        self._gpus = 0

        self._build_ui()
        self._progress_timer = QTimer(self)
        self._progress_timer.setInterval(100)
        self._progress_timer.timeout.connect(self._show_progress)
        self._progress_timer.start()
        self._listen_to(self.controller)
        self.controller.running_changed.connect(self._on_running_changed)
        self._update_buttons()
        if gpu_count is not None:
            self.set_gpu_count(gpu_count())
        else:
            jobs.submit(lambda _job: cuda_device_count(), kind="gpu-count", what="Counting the GPUs", context=self,
                        imports=("torch",), on_done=self.set_gpu_count)

    # --- layout ------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start training with the chosen data and model (Ctrl+R)")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current batch; the last checkpoint stays usable")
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        self.gpus_button = QPushButton("Use all GPUs")
        self.gpus_button.setToolTip("Train one run on every GPU of this machine (one process per GPU, "
                                    "torchrun); the run is followed here like any other")
        self.gpus_button.clicked.connect(self.start_on_all_gpus)
        self.gpus_button.setVisible(False)      # shown once more than one CUDA GPU is found
        self.state_label = QLabel()
        self.state_label.setTextFormat(Qt.TextFormat.RichText)
        self.state_label.setWordWrap(True)          # a long status wraps; it is never cut at the right
        self.state_label.setMinimumWidth(120)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.gpus_button, self.pause_button, self.resume_button, self.stop_button):
            b.setMinimumWidth(84)
            buttons.addWidget(b)
        buttons.addSpacing(12)
        buttons.addWidget(self.state_label, 1)

        self.info_label = QLabel("Device, precision and trainable parameters appear when a run starts.")
        self.info_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("Waiting to start")
        self.progress.setMinimumHeight(24)
        self.memory_label = QLabel("")
        self.memory_label.setStyleSheet("color: palette(placeholder-text);")

        self.charts = TrainingCharts(self)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log_view.setPlaceholderText("Events and warnings of the run appear here.")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.charts)
        splitter.addWidget(self.log_view)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.info_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.memory_label)
        layout.addWidget(splitter, 1)

    # --- page contract -----------------------------------------------------------
    def status(self) -> tuple[bool, str]:
        """(a finished run is available?, one line about the run)."""
        state = self.life.state
        ready = state in (RunState.FINISHED, RunState.STOPPED) and self.run_dir is not None and self._trained
        return ready, self._step_line or self._status_text

    def is_running(self) -> bool:
        """True while a run of this app trains: in its thread, or its torchrun until the launcher exits."""
        return self.controller.is_running() or (self._launch is not None and self._launch.is_running())

    def following_elsewhere(self) -> bool:
        """True while the page follows a run another program writes (Start leaves it running there)."""
        return self._follower is not None and self._follower.following and self._launch is None

    def can_start(self) -> bool:
        return not self.is_running() and (not self.life.busy or self.following_elsewhere())

    def can_pause(self) -> bool:
        return self.life.state in (RunState.STARTING, RunState.RUNNING) and self._follower is None

    def can_stop(self) -> bool:
        return self.life.state in (RunState.STARTING, RunState.RUNNING, RunState.PAUSED) and \
            not self.following_elsewhere()

    def _config_or_fail(self) -> Any:
        try:
            config = self._config_provider()
        except Exception as exc:  # e.g. no data folder chosen yet
            message, details = describe_error(exc, "Preparing the run")
            self._fail_now(message, details)
            self._setup_error = True
            return None
        if config is None:
            self._fail_now("Choose an image folder and a model before training.", "")
            self._setup_error = True
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
        self.log(f"Starting a run: {getattr(config, 'backbone', '?')}, method {getattr(config, 'method', '?')}, "
                 f"{getattr(config, 'epochs', '?')} epochs")
        scan = self._scan_provider()
        same_folder = scan is not None and str(scan.root) == str(getattr(config, "data_dir", ""))
        self.controller.start_training(config, scan if same_folder else None)

    def inputs_changed(self) -> None:
        """The data or the model settings changed: an error about the old settings no longer holds."""
        if self.life.state is RunState.FAILED and self._setup_error:
            self._setup_error = False
            self._set_state(RunState.IDLE, "Not started. Press Start (Ctrl+R) to train.")
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("Waiting to start")

    def resume_run(self, run_dir: str) -> None:
        """Continue a stopped or interrupted run from its last checkpoint."""
        if not self.can_start():
            return
        self._leave_followed()
        self._begin("Resuming…")
        self.run_dir = str(run_dir)
        self.load_history(run_dir, quiet=True)
        done = epochs_done(run_dir)
        if done == 0:
            self.log(f"Resuming the run in {Path(run_dir).name}: it stopped before its first epoch ended, "
                     "so training starts again at epoch 1")
        elif done:
            self.log(f"Resuming the run in {Path(run_dir).name} at epoch {done + 1} "
                     f"(the {done} completed epoch(s) are kept)")
        else:
            self.log(f"Resuming the run in {Path(run_dir).name}")
        self.controller.start_resume(str(run_dir))

    def pause(self) -> None:
        if self.can_pause():
            self.controller.pause()
            self._set_state(RunState.PAUSED, "Paused. Press Resume to continue.")
            self.log("Paused")

    def resume(self) -> None:
        if self.life.state is RunState.PAUSED:
            self.controller.resume()
            self._set_state(RunState.RUNNING, "Training…")
            self.log("Resumed")

    def stop(self) -> None:
        if self.can_stop():
            if self._launch is not None:
                self._launch.stop()         # every process stops after its batch (SIGTERM to the group)
            else:
                self.controller.stop()
            self._set_state(RunState.STOPPING, "Stopping after the current batch…")
            self.log("Stop requested; the run keeps its last completed epoch")

    def stop_and_wait(self, timeout_ms: int) -> bool:
        """Stop a run and wait for its thread or its processes (the window is closing)."""
        if not self.is_running():
            return True
        self.stop()
        if self._launch is not None:
            return self._launch.wait(timeout_ms)
        return self.controller.stop_and_wait(timeout_ms)

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
        from dtl_engine.errors import DTLError
        from dtl_engine.runs.folder import new_run_dir

        try:
            run_dir = new_run_dir(config.backbone, config.method, image_size=config.image_size)
            try:
                command = torchrun_command(config, run_dir, self._gpus, self._launch_args)
            except BaseException:
                remove_if_empty(run_dir)
                raise
        except (DTLError, OSError) as exc:
            self._fail_now(*describe_error(exc, "Preparing the run"))
            self._setup_error = True
            return
        launch = SubprocessRun(command, parent=self)
        launch.ended.connect(lambda code, message: self._launch_ended(launch, str(run_dir), code, message))
        self._launch = launch
        follower = self._follow(str(run_dir))      # set before the state moves: the buttons read both
        self._begin(f"Starting on {self._gpus} GPUs…")
        self.run_dir = str(run_dir)
        self.log(f"Starting a run on {self._gpus} GPUs (one process each): {config.backbone}, method "
                 f"{config.method}, {config.epochs} epochs, in {Path(run_dir).name}")
        launch.start()
        follower.start()

    def _launch_ended(self, launch: SubprocessRun, run_dir: str, code: int, message: str) -> None:
        from dtl_engine.runs.folder import RunFolder

        follower = self._follower if self._follower is not None and self._follower.run_dir == run_dir else None
        if follower is not None and launch.stop_requested and not RunFolder(run_dir).has_run_file():
            follower.stop()                 # stopped while the processes started: no run was made
            self._trained = False
            self.log("Stopped before the run started: nothing was trained")
            self.progress.setRange(0, 1)
            self.progress.setFormat("Stopped before the run started")
            self._set_state(RunState.STOPPED, "Stopped before the run started — nothing was trained",
                            "Stopped before it started")
        elif follower is not None:
            follower.writer_ended(message)
        remove_if_empty(run_dir)
        if self._launch is launch:
            self._launch = None
        self._update_buttons()
        self.status_changed.emit()      # the processes have exited: later steps may update

    def follow_run(self, run_dir: str) -> None:
        """Show a run that another program is training (command line, torchrun, a cluster) as it goes."""
        if not self.can_start():
            self.log(f"A run is training: {Path(run_dir).name} can be shown once it has ended")
            return
        self._leave_followed()
        follower = self._follow(str(run_dir))
        self._begin("Following…")
        self.run_dir = str(run_dir)
        self.log(f"Following the run in {Path(run_dir).name} from its event log")
        follower.start()

    def _follow(self, run_dir: str) -> RunFollower:
        follower = RunFollower(run_dir, self)
        follower.caught_up.connect(self._on_caught_up)
        self._listen_to(follower)
        self._follower = follower
        return follower

    def _leave_followed(self) -> None:
        """Stop following a run another program writes (it goes on there); the page shows something else."""
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.stop()
            follower.deleteLater()
            if self.life.busy and self._launch is None:
                self.log(f"No longer following {Path(follower.run_dir).name}; it goes on training")
                self._set_state(RunState.IDLE, "Not started. Press Start (Ctrl+R) to train.")

    def _on_caught_up(self, digest: Any) -> None:
        """What the followed run's log held so far: its curves, its log, where it stands."""
        if digest.steps or digest.epochs:
            self.charts.set_history(digest.epochs, digest.steps)
        if digest.started is not None:
            self._on_started(digest.started)
        if digest.lines:
            self.log_view.clear()
            self.log_view.appendPlainText("\n".join(digest.lines))
            self.log(f"Following the run in {Path(self.run_dir or '').name} from its event log")
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

    def load_history(self, run_dir: str, quiet: bool = False) -> None:
        """Draw a finished (or stopped) run's curves from its recorded epochs."""
        from dtl_engine.errors import RunError
        from dtl_engine.runs.folder import RunFolder

        if not quiet and not self.can_start():
            self.log(f"A run is training: {Path(run_dir).name} can be shown once it has ended")
            return
        if not quiet:
            self._leave_followed()
        if not RunFolder(run_dir).has_metrics():
            self.charts.clear()
            if not quiet:
                self.log(f"No metrics yet in {Path(run_dir).name}")
            return
        try:
            epochs, steps = read_metrics(run_dir)
        except RunError as exc:
            self.log(f"⚠ {exc}")
            return
        self.charts.set_history(epochs, steps)
        if quiet:
            return
        self.run_dir = str(run_dir)
        # The per-step curves and the log come from the event log, read off the GUI thread.
        jobs.submit(lambda _job: read_event_history(run_dir), kind="history", what="Reading the run's log",
                    context=self, lane="history", supersede="history",
                    on_done=lambda out: self._history_loaded(run_dir, epochs, *out))
        best = max((e.get("val_acc") or 0.0 for e in epochs), default=None)
        trained = sum(1 for e in epochs if not e.get("first_model"))   # the first model (epoch 0) is no epoch
        text = f"Run {Path(run_dir).name}: {trained} epoch(s)"
        line = f"Opened — {trained} epoch(s)"
        if best is not None and epochs:
            text += f", best validation accuracy {100 * best:.1f} %"
            line += f", best {100 * best:.1f} %"
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if epochs else 0)
        self.progress.setFormat(text)
        self._trained = bool(epochs)
        self._set_state(RunState.FINISHED if epochs else RunState.IDLE, text, line)

    def _history_loaded(self, run_dir: str, epochs: list[dict], steps: list[dict], lines: list[str],
                        device: str | None) -> None:
        if self.life.busy or self.run_dir != str(run_dir):
            return                          # another run is shown (or training) now
        if device:
            self.charts.set_memory_kind(device)     # what its memory curve measured
        if steps:
            self.charts.set_history(epochs, steps)
        if lines:
            self.log_view.clear()
            self.log_view.appendPlainText(f"The log of {Path(run_dir).name}:\n" + "\n".join(lines))

    # --- helpers -------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.log_view.appendPlainText(f"{time.strftime('%H:%M:%S')}  {message}")

    def _begin(self, text: str) -> None:
        jobs.drop(self, "history")          # a past run's log still being read is not shown now
        self.charts.clear()
        self.last_result = None
        self.last_error = None
        self._best_val = None
        self._first_acc = None
        self._trained = False
        self._setup_error = False
        self._last_stats = None
        self._last_progress = ""
        self.progress.setRange(0, 0)  # busy until the engine reports its step count
        self.progress.setFormat(text)
        self.memory_label.setText("")
        self._memory_samples = False
        self._pending_batch = None
        self._set_state(RunState.STARTING, text)

    def _set_state(self, state: RunState, text: str, step_line: str = "") -> None:
        """Move to ``state`` showing ``text``; ``step_line``: a shorter line for the step bar (else ``text``)."""
        self._step_line = step_line
        self.life.move(state)
        self._status_text = text
        self._show_state()
        self._update_buttons()
        self.status_changed.emit()

    def _show_state(self) -> None:
        colour = state_color(self.life.state.value)
        self.state_label.setText(f"<span style='color:{colour}'><b>{self._status_text}</b></span>")

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "state_label"):
            self._show_state()          # the state colour follows a light/dark switch

    def _update_buttons(self) -> None:
        self.start_button.setEnabled(self.can_start())
        self.gpus_button.setEnabled(self.can_start())
        self.pause_button.setEnabled(self.can_pause())
        self.resume_button.setEnabled(self.life.state is RunState.PAUSED)
        self.stop_button.setEnabled(self.can_stop())

    def _listen_to(self, source: Any) -> None:
        """Show a run's signals: the in-app run's controller or a follower of another process's run (same set)."""
        source.started.connect(self._on_started)
        source.batch.connect(self._on_batch)
        source.epoch.connect(self._on_epoch)
        source.memory.connect(self._on_memory)
        source.checkpoint.connect(self._on_checkpoint)
        source.warning.connect(lambda msg: self.log(f"⚠ {msg}"))
        source.search.connect(self._on_search)
        source.first_model.connect(self._on_first_model)
        source.backed_off.connect(self._on_backed_off)
        source.finished.connect(self._on_finished)
        source.failed.connect(self._on_failed)

    def _on_running_changed(self, running: bool) -> None:
        self._update_buttons()
        if not running:
            self.status_changed.emit()   # the run's thread has returned: Start and later steps may update

    def _where_stopped(self) -> str:
        """' at epoch 1, step 3/9' from the last step shown (no speed, no time left: the run is over)."""
        stats = self._last_stats
        if stats is None:
            return ""
        return f" at epoch {stats.epoch + 1}, step {stats.step + 1}/{stats.steps_per_epoch}"

    def _fail_now(self, message: str, details: str) -> None:
        self.last_error = (message, details)
        self.log(f"✗ {message}")
        self._set_state(RunState.FAILED, message)
        self.run_failed.emit(message)
        self.error_dialog = show_error(self, "Training could not run", message, details)

    # --- engine signals (main thread) --------------------------------------------
    def _on_started(self, info) -> None:
        self.run_dir = str(info.run_dir)
        self._epochs = int(info.epochs)
        share = 100.0 * info.trainable_params / max(1, info.total_params)
        processes = int((info.config or {}).get("world_size") or 1)
        device = info.device_name + (f" × {processes} processes" if processes > 1 else "")
        self.info_label.setText(
            f"<b>Device:</b> {device} &nbsp; <b>Precision:</b> {info.precision} &nbsp; "
            f"<b>Trainable:</b> {format_count(info.trainable_params)} of {format_count(info.total_params)} "
            f"parameters ({share:.2f} %) &nbsp; <b>Images:</b> {info.num_train} train / {info.num_val} validation, "
            f"{len(info.classes)} classes")
        self.charts.set_epochs(info.epochs)
        self.charts.set_steps_per_epoch(info.steps_per_epoch)
        self.charts.set_memory_kind(info.device)
        self.progress.setRange(0, max(1, info.epochs * info.steps_per_epoch))
        self.progress.setValue(info.start_epoch * info.steps_per_epoch)
        self.progress.setFormat(f"Epoch {info.start_epoch + 1}/{info.epochs}")
        self.log(f"Run folder {Path(info.run_dir).name} on {info.device_name}, {info.precision}, "
                 f"{format_count(info.trainable_params)} trainable parameters")
        if info.start_epoch:
            self.log(f"Continuing at epoch {info.start_epoch + 1}")
        if self.life.state in (RunState.STARTING, RunState.RUNNING):
            elsewhere = self.following_elsewhere()
            self._set_state(RunState.RUNNING, "Training in another program — followed live" if elsewhere
                            else "Training…", "Training elsewhere, followed live" if elsewhere else "")
        self.run_started.emit(self.run_dir)

    def _on_search(self, progress) -> None:
        """The search before epoch 1: a determinate bar, trial k of n, an ETA; its figures in the log as they come."""
        if self.life.state not in (RunState.STARTING, RunState.RUNNING):
            return
        self.progress.setRange(0, SEARCH_BAR_STEPS)
        self.progress.setValue(round(SEARCH_BAR_STEPS * progress.fraction))
        if progress.trial == 0:
            done = f"images {progress.images_done} of {progress.images_total}"
        else:
            done = f"trial {progress.trial} of {progress.trials}"
        eta = "" if progress.eta_seconds is None else \
            f" · {format_eta(progress.eta_seconds, progress.eta_low_seconds, progress.eta_high_seconds)} left"
        self.progress.setFormat(f"{SEARCH_PHASE} — {done}{eta}")
        if self._status_text != f"{SEARCH_PHASE}…":
            self._set_state(self.life.state, f"{SEARCH_PHASE}…")
        if progress.note:
            self.log(describe("search_progress", progress))

    def _on_first_model(self, stats) -> None:
        """Epoch 0: the step-0 model exists (and is the run's best checkpoint) before epoch 1 begins."""
        self._first_acc = float(stats.val_acc)
        self._best_val = max(self._best_val or 0.0, self._first_acc)
        line = first_model_headline(stats.val_acc)
        self.log(describe("first_model", stats))
        if self.life.state in (RunState.STARTING, RunState.RUNNING):
            self._set_state(self.life.state, line)

    def _on_backed_off(self, event) -> None:
        self.log(describe("backed_off", event))

    def _on_batch(self, stats) -> None:
        # Cheap per batch: buffer the points; widgets follow at 10 Hz (_show_progress).
        self.charts.add_batch(stats)
        self._pending_batch = stats

    def _show_progress(self) -> None:
        stats, self._pending_batch = self._pending_batch, None
        if stats is None:
            return
        total = max(1, stats.total_steps)
        if self.progress.maximum() != total:
            self.progress.setRange(0, total)
        self.progress.setValue(min(total, stats.global_step + 1))
        self._last_stats = stats
        # images/s: the smoothed figure the throughput chart draws, not one batch's jumpy rate
        text = (f"Epoch {stats.epoch + 1}/{self._epochs or '?'} · step {stats.step + 1}/{stats.steps_per_epoch}"
                f" · {self.charts.speed:.0f} images/s · "
                f"{format_eta(stats.eta_seconds, stats.eta_low_seconds, stats.eta_high_seconds)} left")
        self.progress.setFormat(text)
        self._last_progress = text
        if stats.memory_bytes and not self._memory_samples:
            self.memory_label.setText(f"Memory now {format_bytes(stats.memory_bytes)}, "
                                      f"peak {format_bytes(stats.peak_memory_bytes)}")

    def _on_epoch(self, stats) -> None:
        self._show_progress()
        self.charts.add_epoch(stats)
        best = " (best so far)" if stats.is_best else ""
        self.log(f"Epoch {stats.epoch + 1}/{stats.epochs}: train loss {stats.train_loss:.4f}, "
                 f"val loss {stats.val_loss:.4f}, val accuracy {100 * stats.val_acc:.1f} %{best} "
                 f"[{format_duration(stats.seconds)}]")
        if stats.is_best or self._best_val is None:
            self._best_val = max(self._best_val or 0.0, stats.val_acc)

    def _on_memory(self, sample) -> None:
        self._memory_samples = True
        kind = {"cuda": "GPU", "mps": "GPU", "process": "process"}.get(sample.kind, sample.kind)
        self.memory_label.setText(f"Memory ({kind}) now {format_bytes(sample.bytes_now)}, "
                                  f"peak {format_bytes(sample.bytes_peak)}")

    def _on_checkpoint(self, path: str, epoch: int) -> None:
        self.log(f"Checkpoint saved after epoch {epoch + 1} ({Path(path).name})")

    def _on_finished(self, result) -> None:
        self._show_progress()
        self.last_result = result
        status = getattr(result, "status", "finished")
        acc = getattr(result, "best_val_acc", None)
        best_epoch = getattr(result, "best_epoch", None)
        summary = f"{getattr(result, 'epochs_done', '?')} epoch(s)"
        if acc is not None:
            summary += f", best validation accuracy {100 * acc:.1f} %"
            if best_epoch is not None:
                summary += f" at epoch {best_epoch + 1}"
        short = f"{getattr(result, 'epochs_done', '?')} epoch(s)" + ("" if acc is None else f", best {100 * acc:.1f} %")
        if getattr(result, "run_dir", None):
            self.run_dir = str(result.run_dir)
        self.charts.refresh()
        done = getattr(result, "epochs_done", None)
        self._trained = done is None or int(done) > 0 or self._first_acc is not None   # the first model counts
        where = self._where_stopped()
        if status == "stopped" and not (done is None or int(done) > 0) and self._first_acc is not None:
            kept = f"the first model ({100 * self._first_acc:.1f} %) is kept"
            self.log(f"Stopped during epoch 1: {kept}. Resume continues at epoch 1.")
            self._set_state(RunState.STOPPED, f"Stopped during epoch 1 — {kept}", "Stopped — first model kept")
            self.progress.setFormat(f"Stopped{where}")
        elif status == "stopped" and not self._trained:
            self.log(f"{NOT_TRAINED} Resume starts again at epoch 1.")
            self._set_state(RunState.STOPPED, "Stopped before the first epoch — nothing trained yet; "
                                              "Resume starts again at epoch 1",
                            "Stopped before the first epoch: nothing trained")
            self.progress.setFormat(f"Stopped before the first epoch{where}")
        elif status == "stopped":
            self.log(f"Stopped: {summary}. Resume it from the Runs page; it continues at epoch {int(done) + 1}.")
            self._set_state(RunState.STOPPED, f"Stopped — {summary}", f"Stopped — {short}")
            self.progress.setFormat(f"Stopped{where}")
        elif status == "interrupted":         # a followed run whose process ended without a last word
            self.log(f"Interrupted: its process ended after {summary}. Resume it from the Runs page.")
            self._set_state(RunState.INTERRUPTED, f"Interrupted — {summary}; resume it from the Runs page",
                            f"Interrupted — {short}")
            self.progress.setFormat(f"Interrupted{where}")
        else:
            self.progress.setValue(self.progress.maximum())
            self.log(f"Finished: {summary}")
            self._set_state(RunState.FINISHED, f"Finished — {summary}", f"Finished — {short}")
            self.progress.setFormat(f"Finished · {summary}")
        self.run_finished.emit(result)

    def _on_failed(self, message: str, details: str) -> None:
        self._pending_batch = None
        self.progress.setRange(0, 1)
        self.progress.setFormat("Failed")
        self._fail_now(message, details)
