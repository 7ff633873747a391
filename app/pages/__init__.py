"""The pages of the main window, one per step (Data, Model, Train, Results, Export, Runs).

Every page is a QWidget with ``status_changed = Signal()`` and ``status() -> (ready, one line)``.
"""
