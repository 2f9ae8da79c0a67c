"""Grouped bar charts as inline SVG strings: no plotting library, no fonts, no network.

One group per metric, one bar per model inside each group, colours fixed per model order.
Every bar is `<rect class="bar" data-model=... data-metric=... data-value=...>` with a
`<title>` tooltip, so the page is inspectable and testable as plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

# Colour-blind-friendly (Okabe-Ito), then a few more; repeats past the end.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000", "#999999", "#882255")

BAR_W, BAR_GAP, GROUP_GAP = 24, 3, 16
CHAR_W = 6.5  # rough width of one 11px sans-serif character, to keep labels apart
PLOT_H, TOP, LEFT, BOTTOM, LEGEND_ROW = 160, 28, 44, 38, 16


def model_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def bar_chart(title: str, metrics: Sequence[str], series: dict[str, Sequence[float | None]],
              *, lower_is_better: Sequence[str] = (), y_max: float | None = None) -> str:
    """SVG of a grouped bar chart.

    `series` maps model name -> one value per metric (None draws no bar). The y axis runs
    from 0 to `y_max` (default: 1, or the largest value if above 1). Metrics in
    `lower_is_better` get a down arrow in their label.
    """
    models = list(series)
    for m, values in series.items():
        if len(values) != len(metrics):
            raise ValueError(f"model {m!r} has {len(values)} values for {len(metrics)} metrics")
    finite = [v for vs in series.values() for v in vs if v is not None]
    top_value = y_max if y_max is not None else max([1.0, *finite])
    top_value = top_value or 1.0

    group_w = max(1, len(models)) * (BAR_W + BAR_GAP) - BAR_GAP
    # Each metric gets a slot wide enough for its bars and its label; bars sit centred in it.
    labels = [m + (" \u2193" if m in lower_is_better else "") for m in metrics]
    slots = [max(group_w, len(label) * CHAR_W) + GROUP_GAP for label in labels]
    plot_w = sum(slots) + GROUP_GAP
    legend_h = LEGEND_ROW * max(1, len(models))
    width = int(LEFT + plot_w + 10)
    height = TOP + PLOT_H + BOTTOM + legend_h
    base = TOP + PLOT_H  # y of the zero line

    def y(v: float) -> float:
        return base - PLOT_H * max(0.0, min(v, top_value)) / top_value

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
           f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>']
    for k in range(5):  # grid lines and y labels at 0, 1/4, ..., 1 of the axis
        v = top_value * k / 4
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end" '
                   f'fill="#555">{_fmt(v)}</text>')
    slot_x = LEFT + GROUP_GAP
    for g, metric in enumerate(metrics):
        x0 = slot_x + (slots[g] - GROUP_GAP - group_w) / 2
        for i, model in enumerate(models):
            value = series[model][g]
            if value is None:
                continue
            x = x0 + i * (BAR_W + BAR_GAP)
            h = base - y(value)
            tip = f"{model} - {metric}: {value:.4g}"
            out.append(f'<rect class="bar" data-model="{escape(model)}" '
                       f'data-metric="{escape(metric)}" data-value="{value:.6g}" x="{x:.1f}" '
                       f'y="{y(value):.1f}" width="{BAR_W}" height="{h:.1f}" '
                       f'fill="{model_color(i)}"><title>{escape(tip)}</title></rect>')
            out.append(f'<text x="{x + BAR_W / 2:.1f}" y="{y(value) - 3:.1f}" '
                       f'text-anchor="middle" font-size="9">{_fmt(value)}</text>')
        out.append(f'<text x="{x0 + group_w / 2:.1f}" y="{base + 16}" '
                   f'text-anchor="middle">{escape(labels[g])}</text>')
        slot_x += slots[g]
    out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{base}" y2="{base}" '
               f'stroke="#333"/>')
    for i, model in enumerate(models):
        ly = base + BOTTOM + i * LEGEND_ROW
        out.append(f'<rect x="{LEFT}" y="{ly - 9}" width="10" height="10" '
                   f'fill="{model_color(i)}"/>')
        out.append(f'<text x="{LEFT + 14}" y="{ly}">{escape(model)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _fmt(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
