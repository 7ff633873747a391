"""A spin box whose lowest value stands for an automatic choice, shown as "Auto (N)"."""
from __future__ import annotations

import re

from PySide6.QtWidgets import QSpinBox


class AutoSpinBox(QSpinBox):
    """Its minimum means "automatic"; one step up from there goes to the value above the automatic one.

    A plain spin box stepped from "Auto (2)" to 1 — below what the automatic choice already gives.
    The automatic value is read from the special text ("Auto (2)", "Backbone default (224 px)").
    """

    def automatic_value(self) -> int | None:
        """N of the "… (N …)" the lowest value shows; None while it is not known."""
        found = re.search(r"\((\d+)", self.specialValueText())
        return int(found.group(1)) if found else None

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt's name
        auto = self.automatic_value()
        if steps > 0 and self.value() == self.minimum() and auto is not None:
            self.setValue(min(self.maximum(), auto + steps * self.singleStep()))
            return
        super().stepBy(steps)
