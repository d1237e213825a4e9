"""Text that collides in a matplotlib figure: two drawn texts overlapping, or a text cut by the
figure's edge. Measured on the texts the renderer actually draws (tick labels outside the
view are never drawn, so they do not count), with each text's window extent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest.mock import patch

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

#: Pixels two texts may share, or stick out of the figure, before they count as colliding.
TOLERANCE = 1.0


def drawn_texts(fig: Figure) -> tuple[list[Text], object]:
    """The non-empty texts drawn when ``fig`` is rendered, and the renderer that drew them."""
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    drawn: dict[int, Text] = {}
    original = renderer.draw_text

    def record(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and s.strip():
            drawn[id(mtext)] = mtext
        return original(gc, x, y, s, prop, angle, ismath, mtext)

    renderer.draw_text = record
    fig.draw(renderer)
    return list(drawn.values()), renderer


def text_clashes(fig: Figure) -> list[str]:
    """One line per pair of drawn texts that overlap and per text the figure's edge cuts."""
    texts, renderer = drawn_texts(fig)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    width, height = fig.bbox.width, fig.bbox.height
    clashes = [
        f"{text!r} is cut by the figure's edge ({box.x0:.0f}, {box.y0:.0f}, {box.x1:.0f}, {box.y1:.0f} "
        f"in {width:.0f} x {height:.0f})"
        for text, box in boxes
        if box.x0 < -TOLERANCE or box.y0 < -TOLERANCE or box.x1 > width + TOLERANCE or box.y1 > height + TOLERANCE
    ]
    for i, (text_a, a) in enumerate(boxes):
        for text_b, b in boxes[i + 1 :]:
            shared_x = min(a.x1, b.x1) - max(a.x0, b.x0)
            shared_y = min(a.y1, b.y1) - max(a.y0, b.y0)
            if shared_x > TOLERANCE and shared_y > TOLERANCE:
                clashes.append(f"{text_a!r} overlaps {text_b!r}")
    return clashes


@contextmanager
def recording_figures() -> Iterator[list[Figure]]:
    """Every figure saved inside the ``with`` block (every page figure goes through ``savefig``)."""
    figures: list[Figure] = []
    original = Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    with patch.object(Figure, "savefig", record):
        yield figures


def assert_readable(figures: list[Figure]) -> None:
    """No figure of ``figures`` has colliding text (and there is at least one figure)."""
    assert figures, "no figure was drawn"
    problems = [f"figure {i}: {clash}" for i, fig in enumerate(figures) for clash in text_clashes(fig)]
    assert not problems, "\n".join(problems)
