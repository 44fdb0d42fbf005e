"""Ctrl-C (SIGINT) and SIGTERM end an rcmae command with exit 130 and the line saying a re-run continues, whatever
library call is running. Two Ray calls take SIGINT over when made on the main thread:
- Ray Train V2's `TorchTrainer.fit` installs a handler that aborts the run and returns, and never puts the previous
  one back: a later Ctrl-C then calls `sys.exit(0)`. `off_the_main_thread` runs such a call on a helper thread,
  where Ray installs nothing (it checks for the main thread), so rcmae's handler stays in force throughout.
- Ray Tune's `Tuner.fit` installs one that ends the sweep gracefully (its state saved, so a re-run resumes) and then
  puts back the handler it found, without calling it: the sweep returns as if it were complete. `sweep_interrupts`
  installs the handler Tune finds; finding it back in force after the sweep means Tune's fired.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
JOIN_SECONDS = 0.5  # how often the waiting main thread wakes (a signal is handled between waits)


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def off_the_main_thread(call: Callable[[], T], name: str) -> T:
    """`call()` on a daemon thread while this one waits, its result or exception passed back. A Ctrl-C raises
    KeyboardInterrupt here; the call is left to end with the process (a re-run resumes from its checkpoints)."""
    if not on_main_thread():
        return call()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the waiting thread, which raises it as its own
            outcome["error"] = error

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(JOIN_SECONDS)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_handlers() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt (the command line turns it into exit 130 and one line)."""
    if on_main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)


@contextmanager
def sweep_interrupts() -> Iterator[threading.Event]:
    """Around `Tuner.fit`: yields an Event that is set, once the block ends, when the sweep was cut short by SIGINT.
    rcmae's handler is the one in force afterwards either way."""
    interrupted = threading.Event()
    if not on_main_thread():  # Tune installs no handler off the main thread: a signal never reaches it
        yield interrupted
        return
    previous = signal.getsignal(signal.SIGINT)

    def found_by_tune(signum: int, frame) -> None:  # Tune's handler puts this back after it fires
        _interrupt(signum, frame)

    signal.signal(signal.SIGINT, found_by_tune)
    try:
        yield interrupted
    finally:
        tune_handles_it = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") in ("", "0")
        if tune_handles_it and signal.getsignal(signal.SIGINT) is found_by_tune:
            interrupted.set()
        signal.signal(signal.SIGINT, previous)
