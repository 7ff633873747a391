"""The one owner of a run's life: allowed moves, and what each state means to the views."""
from __future__ import annotations

import pytest

from app.run_life import RunLife, RunState


def test_a_run_goes_through_its_life_and_reports_each_move(qtbot):
    life = RunLife()
    seen = []
    life.changed.connect(seen.append)
    for state in (RunState.STARTING, RunState.RUNNING, RunState.PAUSED, RunState.RUNNING, RunState.STOPPING,
                  RunState.STOPPED, RunState.STARTING, RunState.RUNNING, RunState.FINISHED):
        life.move(state)
    assert seen[-1] is RunState.FINISHED and len(seen) == 9
    assert not life.busy and life.state.ended


@pytest.mark.parametrize("start, bad", [(RunState.IDLE, RunState.PAUSED), (RunState.IDLE, RunState.RUNNING),
                                        (RunState.STOPPING, RunState.RUNNING),
                                        # a past run shown is no state of the life (RunSession.shown)
                                        (RunState.IDLE, RunState.FINISHED), (RunState.STOPPED, RunState.FINISHED)])
def test_an_impossible_move_is_refused(start, bad):
    life = RunLife()
    life.state = start
    with pytest.raises(ValueError):
        life.move(bad)


def test_run_folder_words_map_to_states():
    assert RunState.of("interrupted").resumable and RunState.of("stopped").resumable
    assert not RunState.of("finished").resumable and RunState.of("finished").ended
    assert RunState.of("weird") is RunState.IDLE and not RunState.of(None).resumable


def test_the_run_menu_offers_what_the_run_state_allows(qtbot, settings, themed):
    from app.main_window import MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    actions = (window.train_action, window.pause_action, window.resume_action, window.stop_action)
    assert [a.isEnabled() for a in actions] == [True, False, False, False]
    life = window.train_page.life
    for state, expected in ((RunState.STARTING, [False, True, False, True]),
                            (RunState.PAUSED, [False, False, True, True]),
                            (RunState.STOPPING, [False, False, False, False]),
                            (RunState.STOPPED, [True, False, False, False])):
        life.move(state)
        assert [a.isEnabled() for a in actions] == expected, state


def test_a_run_paused_during_its_last_step_can_finish():
    # Pause pressed while the last batch runs: the engine returns "finished", the window shows it.
    life = RunLife()
    for state in (RunState.STARTING, RunState.RUNNING, RunState.PAUSED, RunState.FINISHED):
        life.move(state)
    assert life.state is RunState.FINISHED
