"""The Model step's "Fit to my GPU" row: which GPU this machine has, its free memory, and the button.

Reading the GPU imports torch and initialises CUDA, so it runs as a background job. The GPU facts
come from a *probe* (by default :func:`dtl_engine.sizing.planner.current_gpu`); tests hand in a fake one.
The page owns the planning and the settings; this row only shows the GPU, the button and the outcome.
"""
from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app import jobs
from dtl_engine.formatting import format_bytes
from dtl_engine.sizing.planner import GpuInfo, current_gpu

GpuProbe = Callable[[], Optional[GpuInfo]]
NO_GPU = "No GPU found: training runs on the CPU."
FIT_TIP = ("Choose the precision, memory savers and batch size that fit this GPU's free memory "
           "(the memory probe's estimate, with a tenth of the card kept free).")


def default_gpu_probe() -> GpuInfo | None:
    """The current CUDA device (imports torch: call it off the GUI thread)."""
    return current_gpu()


def describe_gpu(gpu: GpuInfo | None) -> str:
    """'NVIDIA RTX 4060 · 7.60 GB free of 8.00 GB', or the no-GPU sentence."""
    if gpu is None:
        return NO_GPU
    return f"{gpu.name} · {format_bytes(gpu.free_bytes)} free of {format_bytes(gpu.total_bytes)}"


class GpuFitRow(QWidget):
    """The GPU's name and free memory, the "Fit to my GPU" button and the last outcome.

    ``fit_requested`` is emitted when the button is pressed; the page answers with
    :meth:`show_busy`, then :meth:`show_outcome`.
    """

    fit_requested = Signal()

    def __init__(self, probe: GpuProbe | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.probe: GpuProbe = probe or default_gpu_probe
        self.gpu: GpuInfo | None = None
        self.detected = False                   # True once the probe has answered
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.setSpacing(6)
        row = QHBoxLayout()
        row.setSpacing(10)
        self.gpu_label = QLabel("Looking for a GPU…")
        self.gpu_label.setProperty("role", "muted")
        self.gpu_label.setWordWrap(True)
        self.button = QPushButton("Fit to my GPU")
        self.button.setEnabled(False)
        self.button.setToolTip(FIT_TIP)
        self.button.clicked.connect(self.fit_requested)
        row.addWidget(self.button)
        row.addWidget(self.gpu_label, 1)
        layout.addLayout(row)
        self.outcome = QLabel("")
        self.outcome.setWordWrap(True)
        self.outcome.setVisible(False)
        layout.addWidget(self.outcome)
        probe = self.probe                      # the worker thread touches no widget
        self._job = jobs.submit(lambda _job: probe(), kind="gpu", what="Reading the GPU", context=self,
                                imports=("torch",), on_done=self.set_gpu, on_error=self._probe_failed)

    def set_gpu(self, gpu: GpuInfo | None) -> None:
        """Show ``gpu`` (None: no GPU, the button is disabled with the reason)."""
        self.gpu, self.detected = gpu, True
        self.gpu_label.setText(describe_gpu(gpu))
        self.button.setEnabled(gpu is not None)
        self.button.setToolTip(FIT_TIP if gpu is not None else NO_GPU)

    def _probe_failed(self, text: str, _details: str) -> None:
        self.detected = True
        self.gpu_label.setText(f"The GPU could not be read: {text}")
        self.button.setEnabled(False)

    def show_busy(self) -> None:
        """A plan is being made: the button waits."""
        self.button.setEnabled(False)
        self.button.setText("Fitting…")

    def show_outcome(self, text: str, role: str = "ok") -> None:
        """The plan's outcome in ``role``'s colour ("ok", "warn", "error"); the button is ready again."""
        self.button.setText("Fit to my GPU")
        self.button.setEnabled(self.gpu is not None)
        self.gpu_label.setText(describe_gpu(self.gpu))
        self.outcome.setText(text)
        self.outcome.setProperty("role", role)
        self.outcome.style().unpolish(self.outcome)
        self.outcome.style().polish(self.outcome)
        self.outcome.setVisible(bool(text))


__all__ = ["GpuFitRow", "GpuProbe", "NO_GPU", "default_gpu_probe", "describe_gpu"]
