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
