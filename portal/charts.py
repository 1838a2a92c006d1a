"""The geometry of the dashboard's charts: where each bar goes, which ticks and labels to draw.

Plain numbers and the texts to show, no markup: the templates in templates/manage/_charts.html draw the SVG
with Jinja's escaping, so a store or tier name can never become markup. Values are integers (fen, members,
points); the caller says how to write a value (`value_text`) and an axis tick (`tick_text`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True)
class Column:
    x: float
    y: float
    width: float
    height: float
    label: str  # the category (a day), for the tooltip
    value_text: str
    negative: bool


@dataclass(frozen=True)
class AxisLabel:
    x: float
    text: str


@dataclass(frozen=True)
class ColumnChart:
    """Vertical columns over a zero line, with value ticks on the left and some category labels below."""

    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    baseline: float  # the y of zero
    columns: list[Column]
    ticks: list[Tick]
    labels: list[AxisLabel]


@dataclass(frozen=True)
class Bar:
    y: float
    width: float
    label: str
    value_text: str
    css: str


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars, one row each, the label on the left and the value after the bar."""

    width: int
    height: int
    label_width: int
    row_height: int
    bar_height: int
    bars: list[Bar]


def nice_step(span: int, parts: int = 4) -> int:
    """A round step (1, 2 or 5 times a power of ten, at least 1) that cuts `span` into about `parts` parts."""
    raw = max(span, 1) / parts
    magnitude = 10 ** max(0, math.floor(math.log10(raw))) if raw >= 1 else 1
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude  # pragma: no cover (the loop always returns)


def _r(value: float) -> float:
    return round(value, 1)


def column_chart(values: Sequence[tuple[str, int]], *, value_text: Callable[[int], str],
                 tick_text: Callable[[int], str], axis_labels: Sequence[str] | None = None,
                 width: int = 720, height: int = 240, left: int = 72, bottom: int = 28, top: int = 12,
                 right: int = 8, max_labels: int = 8) -> ColumnChart:
    """Columns for a series such as sales per day; negative values hang below the zero line.

    `values` are (category, value); `axis_labels` (the same length) are the shorter texts under the axis,
    of which at most `max_labels`, evenly spaced, are drawn."""
    highest = max((value for _, value in values), default=0)
    lowest = min((value for _, value in values), default=0)
    step = nice_step(max(highest, 0) - min(lowest, 0))
    top_value = max(1, math.ceil(max(highest, 0) / step)) * step
    bottom_value = -math.ceil(-min(lowest, 0) / step) * step
    plot_top, plot_bottom = top, height - bottom
    plot_left, plot_right = left, width - right

    def y_of(value: int) -> float:
        return plot_top + (top_value - value) * (plot_bottom - plot_top) / (top_value - bottom_value)

    baseline = y_of(0)
    slot = (plot_right - plot_left) / max(len(values), 1)
    bar_width = max(1.0, slot * 0.7)
    columns = []
    for index, (label, value) in enumerate(values):
        y = y_of(max(value, 0))
        columns.append(Column(x=_r(plot_left + index * slot + (slot - bar_width) / 2), y=_r(y),
                              width=_r(bar_width), height=_r(abs(y_of(value) - baseline)), label=label,
                              value_text=value_text(value), negative=value < 0))
    ticks = [Tick(_r(y_of(value)), tick_text(value)) for value in range(bottom_value, top_value + 1, step)]
    names = list(axis_labels) if axis_labels is not None else [label for label, _ in values]
    every = max(1, math.ceil(len(names) / max_labels))
    labels = [AxisLabel(_r(plot_left + index * slot + slot / 2), name)
              for index, name in enumerate(names) if index % every == 0]
    return ColumnChart(width=width, height=height, plot_left=plot_left, plot_right=plot_right,
                       plot_top=plot_top, plot_bottom=plot_bottom, baseline=_r(baseline), columns=columns,
                       ticks=ticks, labels=labels)


def bar_chart(values: Sequence[tuple[str, int, str]], *, value_text: Callable[[int], str], width: int = 480,
              label_width: int = 110, value_width: int = 90, row_height: int = 30) -> BarChart:
    """One horizontal bar per (label, value, css class), scaled to the largest; negatives draw as empty."""
    highest = max((value for _, value, _ in values), default=0)
    room = width - label_width - value_width
    bars = [Bar(y=index * row_height, width=_r(room * max(value, 0) / highest) if highest > 0 else 0.0,
                label=label, value_text=value_text(value), css=css)
            for index, (label, value, css) in enumerate(values)]
    return BarChart(width=width, height=max(1, len(values)) * row_height, label_width=label_width,
                    row_height=row_height, bar_height=row_height - 10, bars=bars)
