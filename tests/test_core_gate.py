"""bonefrac.runtime.CoreGate: the lock that lets a lone pipeline run take every core. Separate
open() calls of one directory hold separate flock locks, as separate stub processes do."""

from __future__ import annotations

import threading
import time

from bonefrac.runtime import CoreGate


def test_a_run_is_alone_only_while_no_other_run_is_in_progress(tmp_path):
    first, second = CoreGate(tmp_path), CoreGate(tmp_path)
    try:
        with first.running():
            assert first.alone()  # nobody else: exclusive
            first.share()
            with second.running():  # shared again, so a second run may start
                assert not second.alone()
                assert not first.alone()  # and neither is alone while both run
            assert first.alone()  # the second ended
        with second.running():
            assert second.alone()
    finally:
        first.close()
        second.close()


def test_a_run_that_starts_while_another_is_alone_waits_for_it(tmp_path):
    first, second = CoreGate(tmp_path), CoreGate(tmp_path)
    started = []

    def later_run():
        with second.running():
            started.append(time.perf_counter())

    try:
        with first.running():
            assert first.alone()
            thread = threading.Thread(target=later_run)
            thread.start()
            time.sleep(0.2)
            assert not started  # waiting for the exclusive run
            released = time.perf_counter()
        thread.join(timeout=10)
        assert started and started[0] >= released
    finally:
        first.close()
        second.close()


def test_a_run_that_met_another_at_its_start_is_not_alone(tmp_path):
    """Under load another instance is between two runs only for a moment: a run that started
    while another was in progress does not go alone, even if that one has ended since."""
    first, second = CoreGate(tmp_path), CoreGate(tmp_path)
    try:
        earlier = first.running()
        earlier.__enter__()
        with second.running():
            earlier.__exit__(None, None, None)
            assert not second.alone()  # the first has ended, but was there at the start
        with second.running():
            assert second.alone()  # the next run meets nobody
    finally:
        first.close()
        second.close()


def test_only_a_session_that_spins_can_stop_spinning_after_its_run():
    """The solo session's threads spin while it runs and stop when it ends; a session that
    never spins gets no stop entry."""
    from bonefrac.runtime import session_options

    solo = session_options(threads=2, spin=True, spin_after_run=False)
    assert solo.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert solo.get_session_config_entry("session.force_spinning_stop") == "1"
    quiet = session_options(threads=1, spin=False, spin_after_run=False)
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = session_options(threads=2)
    assert default.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    for options in (quiet, default):
        try:
            value = options.get_session_config_entry("session.force_spinning_stop")
        except Exception:  # ONNX Runtime raises for an entry never set
            value = None
        assert value in (None, "", "0")
