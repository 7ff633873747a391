"""One table binds a page's widgets to config fields: (widget, field, converter).

A converter says how to read a field's value from its widget and how to show a value
in it. Adding a setting to a page is one row in its table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtWidgets import QWidget


@dataclass(frozen=True)
class Converter:
    """How a field's value comes out of a widget (``read``) and goes into it (``write``)."""

    read: Callable[[Any], Any]
    write: Callable[[Any, Any], None]


#: A spin box or double spin box holding the value itself.
NUMBER = Converter(lambda w: w.value(), lambda w, v: w.setValue(v))
#: A spin box whose minimum shows a special text ("Auto", "Never") and means None.
OPTIONAL_NUMBER = Converter(lambda w: None if w.value() == w.minimum() else w.value(),
                            lambda w, v: w.setValue(w.minimum() if v is None else v))
#: A spin box showing a fraction as a percentage (0.2 <-> 20 %).
PERCENT = Converter(lambda w: w.value() / 100.0, lambda w, v: w.setValue(round(v * 100)))
#: A spin box whose minimum shows "Automatic" and means "auto" (the engine searches the value).
AUTO_NUMBER = Converter(lambda w: "auto" if w.value() == w.minimum() else w.value(),
                        lambda w, v: w.setValue(w.minimum() if v == "auto" else v))
#: A combo box whose item data is the value (the text is its label).
DATA_CHOICE = Converter(lambda w: w.currentData(), lambda w, v: w.setCurrentIndex(max(0, w.findData(v))))
#: A combo box whose item text is the value.
TEXT_CHOICE = Converter(lambda w: w.currentText(), lambda w, v: w.setCurrentText(v))
#: A check box.
FLAG = Converter(lambda w: w.isChecked(), lambda w, v: w.setChecked(bool(v)))


@dataclass(frozen=True)
class Binding:
    """One row of a page's table: ``widget`` shows config field ``field`` through ``converter``."""

    widget: QWidget
    field: str
    converter: Converter

    def read(self) -> Any:
        """The field's value as the widget shows it."""
        return self.converter.read(self.widget)

    def show(self, value: Any) -> None:
        """Show ``value`` in the widget."""
        self.converter.write(self.widget, value)


def read_all(bindings: tuple[Binding, ...]) -> dict[str, Any]:
    """{field: value} of every binding."""
    return {b.field: b.read() for b in bindings}


def show_changes(bindings: tuple[Binding, ...], values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Show the fields of ``values`` that have a binding; {field: (before, after)} of those that changed.

    ``after`` is read back from the widget, so a value a widget cannot hold is reported as it shows it.
    Fields of ``values`` without a binding are left to the caller.
    """
    changed: dict[str, tuple[Any, Any]] = {}
    for b in bindings:
        if b.field in values:
            before = b.read()
            b.show(values[b.field])
            after = b.read()
            if after != before:
                changed[b.field] = (before, after)
    return changed


def show_all(bindings: tuple[Binding, ...], values: Any) -> None:
    """Show each binding's field of ``values`` (an object with the fields as attributes)."""
    for b in bindings:
        b.show(getattr(values, b.field))


__all__ = ["AUTO_NUMBER", "Binding", "Converter", "DATA_CHOICE", "FLAG", "NUMBER", "OPTIONAL_NUMBER", "PERCENT",
           "TEXT_CHOICE", "read_all", "show_all", "show_changes"]
