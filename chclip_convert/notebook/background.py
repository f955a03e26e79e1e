"""Work in the background for the widgets: one task at a time in a daemon thread, with progress and Cancel.

The kernel stays free while a task runs, so the page goes on drawing its progress. A task is a function of a
progress callback (the library's ``progress=`` parameter); Cancel makes that callback raise
:class:`Cancelled` at the task's next event, which the library treats as any failure: what it was writing is
removed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chclip_convert.progress import OnProgress, Progress


class Cancelled(Exception):
    """Raised from a task's progress callback once Cancel was asked; the partial output is removed."""


class BackgroundTask:
    """Runs one task at a time in a daemon thread: delivers its progress, stops it on Cancel, says when busy.

    ``on_progress`` gets each :class:`Progress` of the task, in its thread. ``on_busy`` gets ``True`` as a task
    starts and ``False`` once it has ended and ``on_end`` (given to :meth:`start`) has shown how: ``busy``
    holds all that time, so a click meanwhile starts nothing. How the last task ended is in ``result``,
    ``error`` (an exception it raised) or ``cancelled``.

    Example:
        >>> task = BackgroundTask(on_progress=print, on_busy=lambda busy: None)
        >>> task.start(lambda progress: sum(range(10)), on_end=lambda task: None)
        True
        >>> task.wait() and task.result
        45
    """

    def __init__(self, on_progress: OnProgress, on_busy: Callable[[bool], None]) -> None:
        self._on_progress, self._on_busy = on_progress, on_busy
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy, self.cancelled = False, False
        self.result: Any = None
        self.error: Exception | None = None

    def start(self, work: Callable[[OnProgress], Any], on_end: Callable[[BackgroundTask], None]) -> bool:
        """Run ``work(progress)`` in a new thread, then ``on_end(self)`` in it; ``False`` (nothing run) if busy."""
        if self.busy:
            return False
        self.result, self.error, self.cancelled = None, None, False
        self._cancel.clear()
        self._set_busy(True)
        self._thread = threading.Thread(target=self._run, args=(work, on_end), daemon=True)
        self._thread.start()
        return True

    def cancel(self) -> bool:
        """Ask the running task to stop at its next progress event; ``False`` if no task is running."""
        if not self.busy:
            return False
        self._cancel.set()
        return True

    @property
    def cancel_requested(self) -> bool:
        """Whether Cancel was asked of the last task started."""
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        """Whether the task's thread is still alive."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task has ended and shown its end; ``False`` if ``timeout`` seconds passed first."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _progress(self, progress: Progress) -> None:
        if self._cancel.is_set():
            raise Cancelled
        self._on_progress(progress)

    def _run(self, work: Callable[[OnProgress], Any], on_end: Callable[[BackgroundTask], None]) -> None:
        try:
            try:
                self.result = work(self._progress)
            except Cancelled:
                self.cancelled = True
            except Exception as error:  # shown by on_end, not lost in the thread
                self.error = error
            on_end(self)
        finally:  # whatever escaped, the widget is usable again
            self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self._on_busy(busy)
