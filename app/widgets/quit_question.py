"""The question the window asks before it closes on background work that would be lost.

Each job submitted with ``loses_work=True`` (training, classifying a folder, an export, the
data check, an evaluation) makes the window ask; the answer is to stop that work and quit
(what is kept is said), to quit once it is done, or to keep working.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from PySide6.QtWidgets import QMessageBox, QWidget

STOP, WAIT = "stop", "wait"         # the answers that quit; None: keep working


@dataclass(frozen=True)
class Loss:
    """What a running job of one kind is, and what stopping it keeps (None: it cannot be cut short)."""

    doing: str
    on_stop: str | None


LOSSES: dict[str, Loss] = {
    "train": Loss("a run is training",
                  "The run stops and keeps its last checkpoint; resume it from the Train or Runs step."),
    "classify-folder": Loss("a folder is being classified",
                            "Classifying stops; the rows done so far are kept in a CSV named as partial."),
    "export": Loss("a model is being exported and checked", None),
    "doctor": Loss("the data check is running", "The data check stops; run it again from the Results step."),
    "evaluate": Loss("a run is being evaluated", "The evaluation stops; it runs again when the run is opened."),
}
_UNKNOWN = Loss("background work is running", "It stops.")


def question(kinds: Sequence[str]) -> tuple[str, str, bool]:
    """(title, text, whether Stop is offered) for live jobs of ``kinds``, in the order given."""
    losses = [LOSSES.get(kind, _UNKNOWN) for kind in dict.fromkeys(kinds)]
    doing = " and ".join(loss.doing for loss in losses)
    title = doing[0].upper() + doing[1:]
    stoppable = [loss.on_stop for loss in losses if loss.on_stop]
    unstoppable = [loss.doing for loss in losses if not loss.on_stop]
    lines = [f"{title}. Quit now?"]
    lines += stoppable
    if unstoppable:
        lines.append(f"The window waits while {' and '.join(unstoppable)}: it cannot be cut short "
                     "without losing the file.")
    return title, "\n\n".join(lines), bool(stoppable)


def ask_before_quit(parent: QWidget | None, kinds: Sequence[str]) -> str | None:
    """Ask about quitting during jobs of ``kinds``: STOP, WAIT, or None to keep working (the default)."""
    title, text, can_stop = question(kinds)
    box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=parent)
    stop = box.addButton("Stop && quit", QMessageBox.ButtonRole.DestructiveRole) if can_stop else None
    wait = box.addButton("Quit when done", QMessageBox.ButtonRole.AcceptRole)
    keep = box.addButton("Keep working", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(keep)
    box.setEscapeButton(keep)
    box.exec()
    clicked = box.clickedButton()
    return STOP if stop is not None and clicked is stop else WAIT if clicked is wait else None
