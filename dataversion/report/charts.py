"""Inline SVG charts (no script, no external asset): bars, stacked columns, histograms.

Pure functions of their numbers and labels; every label is escaped here, so a caller may
pass user content (labels, sources) as it is.
"""

from __future__ import annotations

from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2", "#edc948", "#9c755f", "#bab0ac")
MODALITY_COLORS = {"text": "#4e79a7", "image": "#f28e2b", "audio": "#59a14f", "binary": "#b07aa1"}


def color_of(name: str, index: int) -> str:
    return MODALITY_COLORS.get(name, PALETTE[(index + 4) % len(PALETTE)])


def _fmt(v: float) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}"
    return f"{int(v):,}"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def bar_chart(items: list[tuple[str, float]], *, width: int = 640, bar_h: int = 18, color: str = "#4e79a7",
              label_chars: int = 28, css_class: str = "bars") -> str:
    """Horizontal bars, one per (label, value), in the given order."""
    if not items:
        return '<p class="empty">nothing to show</p>'
    label_w, value_w = 7 * label_chars, 80
    plot_w = width - label_w - value_w
    top = max(v for _, v in items) or 1
    h = bar_h * len(items) + 4
    out = [f'<svg class="{css_class}" role="img" width="{width}" height="{h}" viewBox="0 0 {width} {h}" xmlns="http://www.w3.org/2000/svg">']
    for i, (label, value) in enumerate(items):
        y = 2 + i * bar_h
        w = max(1.0, plot_w * value / top) if value else 0
        out.append(
            f'<g class="bar"><title>{escape(str(label))}: {_fmt(value)}</title>'
            f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{escape(_clip(str(label), label_chars))}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" fill="{color}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h * 0.7:.1f}">{_fmt(value)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def stacked_columns(columns: list[tuple[str, dict[str, float]]], series: list[str], *, width: int = 760,
                    height: int = 220) -> str:
    """One column per (label, {series: value}), stacked in `series` order, with a legend."""
    if not columns:
        return '<p class="empty">nothing to show</p>'
    left, bottom, legend_h = 64, 36, 22
    plot_w, plot_h = width - left - 10, height - bottom - legend_h
    top = max(sum(v.values()) for _, v in columns) or 1
    step = plot_w / len(columns)
    col_w = max(2.0, min(40.0, step * 0.75))
    out = [f'<svg class="columns" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    for frac in (0, 0.5, 1):
        y = legend_h + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(top * frac)}</text>')
    label_every = max(1, len(columns) // 12)
    for i, (label, values) in enumerate(columns):
        x = left + i * step + (step - col_w) / 2
        y = legend_h + plot_h
        parts = []
        for j, name in enumerate(series):
            v = values.get(name, 0)
            if not v:
                continue
            h = plot_h * v / top
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{col_w:.1f}" height="{h:.1f}" fill="{color_of(name, j)}"/>')
        tip = ", ".join(f"{k} {_fmt(values.get(k, 0))}" for k in series if values.get(k))
        out.append(f'<g class="column"><title>{escape(str(label))}: {escape(tip)}</title>{"".join(parts)}</g>')
        if i % label_every == 0:
            out.append(f'<text x="{x + col_w / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" class="tick">{escape(_clip(str(label), 10))}</text>')
    x = left
    for j, name in enumerate(series):
        out.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{color_of(name, j)}"/>'
                   f'<text x="{x + 16}" y="14">{escape(name)}</text>')
        x += 24 + 8 * len(name)
    out.append("</svg>")
    return "".join(out)


def histogram(bins: list[tuple[str, float]], *, width: int = 640, height: int = 180, color: str = "#59a14f") -> str:
    """Vertical bars over labelled bins (e.g. size ranges), in order."""
    if not bins or not any(v for _, v in bins):
        return '<p class="empty">nothing to show</p>'
    left, bottom = 56, 40
    plot_w, plot_h = width - left - 10, height - bottom - 8
    top = max(v for _, v in bins) or 1
    step = min(plot_w / len(bins), 56.0)
    out = [f'<svg class="histogram" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    out.append(f'<text x="{left - 6}" y="16" text-anchor="end">{_fmt(top)}</text>'
               f'<line x1="{left}" x2="{width - 10}" y1="{8 + plot_h}" y2="{8 + plot_h}" class="grid"/>')
    label_every = max(1, len(bins) // 10)
    for i, (label, v) in enumerate(bins):
        h = plot_h * v / top
        x = left + i * step
        out.append(f'<g class="bin"><title>{escape(label)}: {_fmt(v)}</title>'
                   f'<rect x="{x + 1:.1f}" y="{8 + plot_h - h:.1f}" width="{max(1.0, step - 2):.1f}" height="{h:.1f}" fill="{color}"/></g>')
        if i % label_every == 0:
            out.append(f'<text x="{x + step / 2:.1f}" y="{height - bottom + 18}" text-anchor="middle" class="tick">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
