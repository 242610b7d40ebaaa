"""The picture of `hil compare`: per scenario, A's and B's per-agent times side by side.

A box per run (median, quartiles, whiskers to the extremes) with every agent drawn over it, so a shift, a
wider spread or a single slow agent all show; the axis is scaled to the data, not to a bound.
"""

from __future__ import annotations

from pathlib import Path

from harness.plots import _png, _pyplot
from harness.report.compare import Comparison

__all__ = ["comparison_png"]


def comparison_png(cmp: Comparison, path: str | Path | None = None, metric: str = "recovery") -> bytes:
    """One row per scenario that has `metric` times in either run; PNG bytes (also written to `path`)."""
    rows = [(s, m) for s in cmp.scenarios for m in s.metrics if m.metric == metric]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.9 * len(rows) + 1.2)))
    if not rows:
        ax.text(0.5, 0.5, f"no {metric} times in either run", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig, path)
    data, pos, colours, labels = [], [], [], []
    for k, (s, _m) in enumerate(rows):
        base = (len(rows) - 1 - k) * 3.0
        for off, side, colour in ((0.6, "a", "tab:blue"), (-0.6, "b", "tab:orange")):
            vals = (s.times_a if side == "a" else s.times_b).get(metric, [])
            data.append(vals or [float("nan")])
            pos.append(base + off)
            colours.append(colour)
        labels.append((base, s.scenario.rsplit("#", 1)[-1][:48] + ("  REGRESSION" if s.regressions else "")))
    import matplotlib  # loaded by _pyplot() above already

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    horizontal = {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}
    bp = ax.boxplot(data, positions=pos, widths=0.9, whis=(0, 100), patch_artist=True, **horizontal)
    for patch, c in zip(bp["boxes"], colours, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.35)
    for vals, y, c in zip(data, pos, colours, strict=True):
        ax.plot(vals, [y] * len(vals), "|", color=c, markersize=9, alpha=0.7)
    ax.set_yticks([b for b, _ in labels], [lab for _, lab in labels], fontsize=8)
    ax.set_xlabel(f"{metric} time per agent (s, from the fault's start)")
    ax.set_title(f"{metric}: A (blue) vs B (orange)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig, path)
