"""Progress for slow steps only, one level at a time.

A step still running after :data:`PROGRESS_DELAY` seconds shows a tqdm bar (:func:`step_bar`)
or one status line (:func:`status_line`); faster steps print nothing. While an outer loop
shows its own bar (an audit, ``cms``, the five-task page, an evaluation stage), the steps
inside it (occlusion of one image, a backend probe) show none: the loop runs them under
:func:`inside_outer_bar`, or iterates :func:`outer_bar`.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence, TypeVar

from tqdm.auto import tqdm

__all__ = ["PROGRESS_DELAY", "advance", "counted", "inside_outer_bar", "outer_bar", "status_line", "step_bar"]

#: Progress bars and status lines appear only for steps still running after this many seconds.
PROGRESS_DELAY = 2.0

_outer = threading.local()
_T = TypeVar("_T")


def _under_outer_bar() -> bool:
    return getattr(_outer, "depth", 0) > 0


@contextmanager
def inside_outer_bar() -> Iterator[None]:
    """Within this block (on this thread) :func:`step_bar` and :func:`status_line` show nothing:
    an outer loop's bar already tells the progress."""
    _outer.depth = getattr(_outer, "depth", 0) + 1
    try:
        yield
    finally:
        _outer.depth -= 1


def step_bar(iterable: Any = None, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)`` shown after :data:`PROGRESS_DELAY` s, removed when done,
    and off inside an outer bar."""
    return tqdm(iterable, delay=PROGRESS_DELAY, leave=False, disable=_under_outer_bar(), **options)


def advance(bar: tqdm, n: int) -> None:
    """``bar.update(n)``, but the step that completes a bar of known total is not drawn:
    ``close()`` draws the final line, so it is printed once."""
    if bar.total is not None and not bar.disable and bar.n + n >= bar.total:
        bar.n += n
    else:
        bar.update(n)


def counted(items: Sequence[_T], **options: Any) -> Iterator[_T]:
    """The ``items`` under a tqdm bar (``options``: tqdm's) with their total, each counted once
    the loop's body is done with it, the final line drawn once (:func:`advance`)."""
    with tqdm(total=len(items), **options) as bar:
        for item in items:
            yield item
            advance(bar, 1)


def outer_bar(iterable: Iterable[_T], **options: Any) -> Iterator[_T]:
    """The items of ``iterable`` under a :func:`step_bar` (``options``: tqdm's, e.g. ``desc``,
    ``total``), the loop's body running under :func:`inside_outer_bar`: this bar is the only one."""
    with step_bar(iterable, **options) as bar:
        for item in bar:
            with inside_outer_bar():
                yield item


@contextmanager
def status_line(message: str) -> Iterator[list[str]]:
    """One stderr line ``message ...`` when the block still runs after :data:`PROGRESS_DELAY` s,
    then ``message: done in S s`` and what the block appended to the yielded list (e.g. the
    backend chosen). Nothing for a faster block or inside an outer bar."""
    notes: list[str] = []
    shown = threading.Event()

    def show() -> None:
        tqdm.write(f"{message} ...", file=sys.stderr)
        shown.set()

    start, timer = time.perf_counter(), threading.Timer(PROGRESS_DELAY, show)
    timer.daemon = True
    quiet = _under_outer_bar()
    if not quiet:
        timer.start()
    try:
        yield notes
    finally:
        timer.cancel()
        if not quiet:
            timer.join()  # a line being written is finished first
        if shown.is_set():
            extra = "".join(f", {note}" for note in notes)
            tqdm.write(f"{message}: done in {time.perf_counter() - start:.1f} s{extra}", file=sys.stderr)
