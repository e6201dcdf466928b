"""One log line per interval for an event that repeats (a store outage refusing every request),
with the count, instead of one line per occurrence."""

from __future__ import annotations

import logging
import threading
import time


class QuietLog:
    """``event()`` logs the first occurrence at once, then at most one line per ``interval``
    saying how many more there were; ``ended()`` logs the total once the condition is over.

    Thread-safe; costs a lock and a clock read per occurrence."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        what: str,
        *,
        interval: float = 10.0,
        report_end: bool = True,
    ) -> None:
        self.report_end = report_end
        self.log = logger
        self.level = level
        self.what = what  # e.g. "submissions refused, store unavailable"
        self.interval = interval
        self._lock = threading.Lock()
        self._started: float | None = None
        self._last_line = 0.0
        self._pending = 0
        self._total = 0

    def event(self, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._total += 1
            if self._started is None:
                self._started = self._last_line = now
                line = f"{self.what}: {detail}"
            elif now - self._last_line >= self.interval:
                line = (
                    f"{self.what}: {self._pending + 1} more in the last "
                    f"{now - self._last_line:.0f} s ({self._total} since it began): {detail}"
                )
                self._last_line, self._pending = now, 0
            else:
                self._pending += 1
                return
        self.log.log(self.level, "%s", line)

    @property
    def started(self) -> bool:
        """True while the condition lasts (between the first ``event`` and ``ended``)."""
        return self._started is not None

    def ended(self) -> None:
        """The condition is over (e.g. a submission was stored again)."""
        if self._started is None:  # the common case: nothing to say, no lock
            return
        with self._lock:
            if self._started is None:
                return
            took = time.monotonic() - self._started
            total, self._started, self._pending, self._total = self._total, None, 0, 0
        if self.report_end:
            self.log.warning("%s: over after %.0f s; %d in all", self.what, took, total)
