"""The main window: a step bar on the left (Data → Model → Train → Results → Export, plus Runs),
one page per step on the right, menus and shortcuts, and a careful close while background jobs run."""
from __future__ import annotations

import time
from typing import Any, Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QMainWindow, QMessageBox, QStackedWidget, QWidget

from app import jobs
from app.pages import StepPage
from app.pages.data_page import DataPage
from app.pages.export_page import ExportPage
from app.pages.model_page import ModelPage
from app.pages.results_page import ResultsPage
from app.pages.runs_page import RunsPage
from app.pages.train_page import TrainPage
from app.run_follower import is_live
from app.run_life import RunState
from app.settings import Settings
from app.theme import app_icon
from app.widgets.open_folder import open_folder
from app.widgets.quit_question import STOP, WAIT, ask_before_quit
from app.widgets.step_bar import StepBar
from app.widgets.wheel_guard import install_wheel_guard
from dtl_engine.errors import DataError
from dtl_engine.events import RunEnded
from dtl_engine.paths import runs_dir

STEPS = ("Data", "Model", "Train", "Results", "Export")
EXTRA = ("Runs",)
DATA, MODEL, TRAIN, RESULTS, EXPORT, RUNS = range(6)
CLOSE_TIMEOUT_S = 60.0
MIN_WIDTH, MIN_HEIGHT = 860, 600        # a small laptop screen with a panel still fits the window


class MainWindow(QMainWindow):
    """DTL Studio's window. ``train_fn`` / ``resume_fn`` replace the engine's (tests)."""

    def __init__(self, settings: Settings | None = None, *, train_fn: Callable[..., Any] | None = None,
                 resume_fn: Callable[..., Any] | None = None) -> None:
        super().__init__()
        install_wheel_guard()           # the wheel scrolls pages; it changes a box only after a click
        self.settings = settings or Settings()
        self.setWindowTitle("DTL Studio")
        self.setWindowIcon(app_icon())
        self.setMinimumSize(MIN_WIDTH, MIN_HEIGHT)
        self._closing_since: float | None = None
        self._waited_for: list[jobs.Job] = []     # jobs the user chose to let finish before quitting
        self._close_timer = QTimer(self)
        self._close_timer.setInterval(100)
        self._close_timer.timeout.connect(self._check_closing)

        self.data_page = DataPage(self.settings)
        self.model_page = ModelPage(self.settings)
        self.train_page = TrainPage(self.config_for_run, train_fn=train_fn, resume_fn=resume_fn,
                                    scan_provider=lambda: self.data_page.scan_result())
        self.results_page = ResultsPage()
        self.export_page = ExportPage()
        self.runs_page = RunsPage()
        self.pages: list[StepPage] = [self.data_page, self.model_page, self.train_page, self.results_page,
                                     self.export_page, self.runs_page]

        self.step_bar = StepBar(list(STEPS), list(EXTRA))
        self.stack = QStackedWidget()
        for page in self.pages:
            assert isinstance(page, QWidget)
            self.stack.addWidget(page)
            page.status_changed.connect(self.update_steps)
        self.step_bar.step_selected.connect(self.show_step)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.step_bar)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self._wire()
        self._build_menus()
        self.update_steps()
        self.show_step(DATA)
        geometry = self.settings.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1240, 820)
        # Until a folder's scan is ready (then _forget_drop_hint), or 8 s.
        self.statusBar().showMessage("Drop an image folder on the Data step, or press Ctrl+O.", 8000)
        self.runs_page.refresh_in_background()  # past runs: the sidebar, Results and Export know them

    def config_for_run(self):
        """The TrainConfig of the next run: the model page's settings on the data page's folder."""
        root = self.data_page.data_root()
        if root is None:
            raise DataError("Choose an image folder on the Data step before training.")
        return self.model_page.build_config(root)

    # --- wiring -----------------------------------------------------------------------------------
    def _wire(self) -> None:
        self.data_page.scan_ready.connect(self.model_page.set_scan)
        self.model_page.config_changed.connect(self._config_changed)
        self.data_page.scan_ready.connect(lambda *_: self.train_page.inputs_changed())
        self.model_page.config_changed.connect(lambda *_: self.train_page.inputs_changed())
        self.model_page.estimate_ready.connect(self._estimate_ready)
        self._config_changed()
        self.train_page.run_finished.connect(self._run_finished)
        self.train_page.run_started.connect(
            lambda run_dir: self.statusBar().showMessage(f"Training in {run_dir}", 6000))
        self.runs_page.open_run.connect(self.open_run)
        self.runs_page.resume_run.connect(self.resume_run)
        self.train_page.weights_wanted.connect(self._use_weights)
        self.data_page.scan_ready.connect(lambda *_: self._forget_drop_hint())

    def _forget_drop_hint(self) -> None:
        if self.statusBar().currentMessage().startswith("Drop an image folder"):
            self.statusBar().clearMessage()     # a folder is loaded: the hint no longer holds

    def _use_weights(self, which: str) -> None:
        """The one-click answers to weights that could not be had: random weights (and train), or a file."""
        if which == "random":
            self.model_page.w_random.setChecked(True)
            self._start_when_free()
        else:
            self.show_step(MODEL)
            self.model_page.w_file.setChecked(True)
            self.model_page.weights_browse.click()

    def _start_when_free(self) -> None:
        """Start a run now, or once the run that just failed has let go of its thread (a click on the
        failure's own button can come before that)."""
        session = self.train_page.session
        if self.train_page.can_start() or not session.holds_worker():
            self.start_training()
        else:
            session.changed.connect(self._start_when_free, Qt.ConnectionType.SingleShotConnection)

    def _config_changed(self) -> None:
        d = self.model_page.config_dict()
        self.data_page.set_val_fraction(d["val_fraction"], d["seed"])

    def _estimate_ready(self, _text: str) -> None:
        est = self.model_page.last_estimate
        if est is not None:
            self.train_page.set_reference_memory(int(est.full.total_bytes))

    def _run_finished(self, result: RunEnded) -> None:
        if not result.run_dir or self._closing_since is not None:
            return                          # closing: start no new work
        # Even a run stopped before its first epoch replaces the last run's figures: Results and Export
        # show its first model, or say it has no model yet (never the previous run's, with a check).
        self.results_page.show_run(result.run_dir)
        self.export_page.set_run(result.run_dir)
        self.runs_page.refresh_in_background()
        if result.status == "finished":
            self.show_step(RESULTS)

    def open_run(self, run_dir: str) -> None:
        """Show a past run everywhere: results, export and its training curves.

        A run another program is still training (command line, torchrun, a cluster job) is
        followed live on the Train step; Results and Export take it up once it has ended.
        """
        if is_live(run_dir):
            self.train_page.follow_run(run_dir)
            self.show_step(TRAIN)
            return
        self.results_page.show_run(run_dir)
        self.export_page.set_run(run_dir)
        self.train_page.load_history(run_dir)
        self.show_step(RESULTS)

    def resume_run(self, run_dir: str) -> None:
        """Continue a stopped run on the Train step."""
        self.train_page.resume_run(run_dir)
        self.show_step(TRAIN)

    # --- steps ----------------------------------------------------------------------------------------
    def show_step(self, index: int) -> None:
        """Show page ``index`` (0 = Data … 5 = Runs)."""
        if index == RUNS:
            self.runs_page.refresh_in_background()
        self.stack.setCurrentIndex(index)
        self.step_bar.set_current(index)

    def current_step(self) -> int:
        """Index of the page shown."""
        return self.stack.currentIndex()

    def step_states(self) -> list[tuple[bool, str]]:
        """(ready, line) of every step as the bar shows them."""
        return [self.step_bar.state(i) for i in range(len(self.pages))]

    def update_steps(self) -> None:
        """Refresh every step's ready flag and status line; later steps say what they wait for."""
        states = [self._page_status(p) for p in self.pages]
        data_ok, model_ok = states[DATA][0], states[MODEL][0]
        session = self.train_page.session
        if session.state is RunState.IDLE and session.shown is None:     # a run ended or shown says its own line
            if not data_ok:
                states[TRAIN] = (False, "Waiting for an image folder")
            elif not model_ok and self.model_page.needs_settings():
                states[TRAIN] = (False, "Waiting for the model settings")
        for step, page_run, need in ((RESULTS, self.results_page.run_dir, "Waiting for a finished run"),
                                     (EXPORT, self.export_page.run_dir, "Waiting for a trained model")):
            if page_run is None:        # no run there yet: what it waits for (a stopped run's own line stays)
                states[step] = (False, need)
        for i, (ok, line) in enumerate(states):
            self.step_bar.set_state(i, ok, line)

    @staticmethod
    def _page_status(page: StepPage) -> tuple[bool, str]:
        try:
            ok, line = page.status()
            return bool(ok), str(line)
        except Exception as exc:  # a page bug shows as a line, not a crash
            return False, f"Status unavailable ({exc})"

    # --- menus and shortcuts ---------------------------------------------------------------------
    def _action(self, menu, text: str, slot: Callable,
                shortcut: str | QKeySequence | QKeySequence.StandardKey | None = None,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.open_action = self._action(file_menu, "&Open image folder…", self.open_folder_dialog,
                                        QKeySequence.StandardKey.Open, "Choose a folder of images")
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._action(file_menu, "Use &sample data", self.data_page.use_sample)
        file_menu.addSeparator()
        self.quit_action = self._action(file_menu, "&Quit", self.close, "Ctrl+Q")
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)

        run_menu = bar.addMenu("&Run")
        self.train_action = self._action(run_menu, "&Train", self.start_training, "Ctrl+R",
                                         "Start training with the chosen data and model")
        self.pause_action = self._action(run_menu, "&Pause", self.train_page.pause)
        self.resume_action = self._action(run_menu, "Res&ume", self.train_page.resume)
        self.stop_action = self._action(run_menu, "&Stop", self.train_page.stop)
        self.train_page.session.changed.connect(self._run_state_changed)
        self.train_page.status_changed.connect(self._run_state_changed)
        self._run_state_changed()
        run_menu.addSeparator()
        self.export_action = self._action(run_menu, "&Export…", lambda: self.show_step(EXPORT), "Ctrl+E",
                                          "Export the trained classifier")

        go_menu = bar.addMenu("&Go")
        self.step_actions = []
        for i, title in enumerate(STEPS + EXTRA):
            self.step_actions.append(self._action(go_menu, title, lambda _=False, i=i: self.show_step(i),
                                                  f"Ctrl+{i + 1}"))

        help_menu = bar.addMenu("&Help")
        self.help_actions = [
            self._action(help_menu, "&Getting started", self._getting_started, QKeySequence.StandardKey.HelpContents),
            self._action(help_menu, "&Keyboard shortcuts", self._shortcuts),
            self._action(help_menu, "Open the &runs folder", self._open_runs_folder,
                         tip="Where every run keeps its weights, curves and log"),
        ]
        help_menu.addSeparator()
        self.help_actions.append(self._action(help_menu, "&About DTL Studio", self._about))

    def _run_state_changed(self, *_args: Any) -> None:
        # The Run menu offers what the Train step's buttons offer (a run followed from another program
        # can be left to itself by starting a new one; it cannot be paused or stopped from here).
        page = self.train_page
        self.train_action.setEnabled(page.can_start())
        self.pause_action.setEnabled(page.can_pause())
        self.resume_action.setEnabled(page.can_resume())
        self.stop_action.setEnabled(page.can_stop())

    def open_folder_dialog(self) -> None:
        """Ctrl+O: go to the Data step and ask for a folder."""
        self.show_step(DATA)
        self.data_page.browse()

    def start_training(self) -> None:
        """Ctrl+R: start a run on the Train step."""
        self.show_step(TRAIN)
        self.train_page.start()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        folders = self.settings.recent_folders()
        for folder in folders:
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self._open_recent(f))
        if not folders:
            self.recent_menu.addAction("No recent folders").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear the list", self._clear_recent)

    def _open_recent(self, folder: str) -> None:
        self.show_step(DATA)
        self.data_page.open_folder(folder)

    def _clear_recent(self) -> None:
        self.settings.clear_recent_folders()
        self.data_page.refresh_recent()

    def _getting_started(self) -> None:
        QMessageBox.information(
            self, "Getting started",
            "<ol><li><b>Data</b>: drop a folder with one sub-folder of images per class, or use the sample "
            "data.</li><li><b>Model</b>: the defaults are a good start; pretrained weights download once.</li>"
            "<li><b>Train</b>: press Start (Ctrl+R). Pause, Stop and Resume keep every completed epoch.</li>"
            "<li><b>Results</b>: accuracy, confusion matrix and the images the model got wrong.</li>"
            "<li><b>Export</b>: save a file that runs anywhere PyTorch runs, and try it on new images.</li></ol>"
            "Every run is kept on the <b>Runs</b> step: open it again, or resume a stopped one.")

    def _shortcuts(self) -> None:
        rows = [("Ctrl+O", "Open an image folder"), ("Ctrl+R", "Start training"), ("Ctrl+E", "Export"),
                ("Ctrl+1 … Ctrl+6", "Go to a step"), ("Ctrl+Q", "Quit")]
        QMessageBox.information(self, "Keyboard shortcuts", "<table>" + "".join(
            f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>" for k, v in rows) + "</table>")

    def _open_runs_folder(self) -> None:
        open_folder(runs_dir(), self, "The runs folder")

    def _about(self) -> None:
        QMessageBox.about(self, "About DTL Studio",
                          "<b>DTL Studio</b><br>No-code transfer learning of image classifiers with "
                          "Disentangled Transfer Learning (Fu, Zhu, Wu, AAAI 2024): a frozen pretrained "
                          "backbone plus a tiny side network of low-rank maps.")

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.step_bar.fit_to_window(self.width())

    # --- closing --------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        """Ask about jobs that would lose work, cancel the rest, and close once every job has ended."""
        if self._closing_since == -1.0:     # every job has ended (or the wait ran out): really close
            self._close_timer.stop()
            event.accept()
            return
        if self._closing_since is not None:     # already waiting for jobs to end
            event.ignore()
            return
        active = jobs.active_jobs()
        losing = [job for job in active if job.loses_work]
        choice = self.confirm_quit(losing) if losing else STOP
        if choice is None:
            event.ignore()
            return
        self._waited_for = losing if choice == WAIT else []
        self.settings.set_geometry(self.saveGeometry())
        self.model_page.save_config()
        if not active:
            self._closing_since = -1.0
            self.closeEvent(event)
            return
        # Cancel without freezing the window: close once the last job has ended.
        self._closing_since = time.monotonic()
        jobs.cancel_all(keep=self._waited_for)
        self.statusBar().showMessage(self._closing_message(active, waiting=bool(self._waited_for)))
        self._close_timer.start()
        event.ignore()

    def confirm_quit(self, losing: list[jobs.Job]) -> str | None:
        """Ask whether to quit although ``losing`` jobs would lose work: STOP, WAIT or None (keep working)."""
        return ask_before_quit(self, [job.kind for job in losing])

    @staticmethod
    def _closing_message(active: list[jobs.Job], waiting: bool = False) -> str:
        if waiting:
            return "Quitting once the work under way is done…"
        if any(job.kind == "train" for job in active):
            return "Stopping the run and saving its checkpoint…"
        if any(job.kind == "export" for job in active):
            return "Finishing the export before closing…"
        return "Finishing background work before closing…"

    def _check_closing(self) -> None:
        jobs.cancel_all(keep=self._waited_for)  # also anything a finishing job started meanwhile
        live = jobs.active_jobs()
        overdue = (self._closing_since is not None and time.monotonic() - self._closing_since > CLOSE_TIMEOUT_S
                   and not any(job in live for job in self._waited_for))   # no time limit on what the user awaits
        if not live or overdue:
            self._close_timer.stop()
            self._waited_for = []
            self._closing_since = -1.0      # marks "confirmed": closeEvent will accept now
            self.close()
