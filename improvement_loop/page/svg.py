"""The page's plots as inline SVG built by hand: a few polylines and rectangles need no plotting library, load
nothing at run time and stay selectable, searchable text in the page. Every value is escaped."""
from __future__ import annotations

from html import escape

PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#8c6d1f", "#555555")
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 560, 210, 44, 12, 26, 40


def _frame(plot_id: str, title: str, body: str, legend: list[str], y_labels: list[tuple[float, str]],
           x_labels: list[tuple[float, str]]) -> str:
    """Axes, grid, labels and a legend around `body` (plot coordinates already mapped to pixels)."""
    bottom = HEIGHT - BOTTOM
    grid = "".join(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(t)}</text>'
                   for y, t in y_labels)
    ticks = "".join(f'<text class="tick" x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{escape(t)}</text>'
                    for x, t in x_labels)
    keys = "".join(f'<rect x="{LEFT + 130 * (i % 4)}" y="{bottom + 22 + 14 * (i // 4)}" width="10" height="10" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"/><text class="legend" x="{LEFT + 14 + 130 * (i % 4)}" '
                   f'y="{bottom + 31 + 14 * (i // 4)}">{escape(name[:20])}</text>' for i, name in enumerate(legend))
    height = HEIGHT + 14 * max(0, (len(legend) - 1) // 4)
    return (f'<svg class="plot" data-plot="{escape(plot_id)}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-label="{escape(title)}"><text class="title" x="{LEFT}" y="16">'
            f'{escape(title)}</text>{grid}<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" '
            f'y2="{bottom}"/>{ticks}{body}{keys}</svg>')


def _x(i: int, n: int) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (i + 0.5) / max(n, 1)


def _y(value: float, top: float) -> float:
    return HEIGHT - BOTTOM - (HEIGHT - BOTTOM - TOP) * (value / top if top else 0.0)


def _day_labels(days: list[str]) -> list[tuple[float, str]]:
    picks = sorted({0, len(days) // 2, len(days) - 1}) if days else []
    return [(_x(i, len(days)), days[i][5:]) for i in picks]


def rate_chart(plot_id: str, title: str, days: list[str], series: dict[str, dict[str, dict]], key: str) -> str:
    """One line per series over `days` of the rate `key` (0..1) of each day's summary; a day without
    episodes breaks the line; each point's tooltip gives the rate and the episode count."""
    index = {d: i for i, d in enumerate(days)}
    body = []
    for s, (name, per_day) in enumerate(series.items()):
        color = PALETTE[s % len(PALETTE)]
        points = sorted((index[d], v[key], v["episodes"]) for d, v in per_day.items() if d in index)
        runs, run = [], []
        for point in points:
            if run and point[0] != run[-1][0] + 1:
                runs.append(run)
                run = []
            run.append(point)
        runs += [run] if run else []
        for run in runs:
            if len(run) > 1:
                coords = " ".join(f"{_x(i, len(days)):.1f},{_y(v, 1.0):.1f}" for i, v, _ in run)
                body.append(f'<polyline class="series" data-series="{escape(name)}" points="{coords}" '
                            f'stroke="{color}"/>')
        body += [f'<circle cx="{_x(i, len(days)):.1f}" cy="{_y(v, 1.0):.1f}" r="3" fill="{color}"><title>'
                 f'{escape(name)} {days[i]}: {v:.0%} of {n} episodes</title></circle>' for i, v, n in points]
    y_labels = [(_y(v, 1.0), f"{v:.0%}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return _frame(plot_id, title, "".join(body), list(series), y_labels, _day_labels(days))


def count_chart(plot_id: str, title: str, days: list[str], stacks: dict[str, dict[str, int]]) -> str:
    """Stacked bars: per day, one block per stack (robot) of its count."""
    totals = [sum(s.get(d, 0) for s in stacks.values()) for d in days]
    top = max(totals + [1])
    width = (WIDTH - LEFT - RIGHT) / max(len(days), 1) * 0.7
    body, base = [], [0] * len(days)
    for s, (name, per_day) in enumerate(stacks.items()):
        for i, day in enumerate(days):
            count = per_day.get(day, 0)
            if count:
                y0, y1 = _y(base[i], top), _y(base[i] + count, top)
                body.append(f'<rect class="bar" x="{_x(i, len(days)) - width / 2:.1f}" y="{y1:.1f}" '
                            f'width="{width:.1f}" height="{y0 - y1:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                            f'<title>{escape(name)} {day}: {count} episodes</title></rect>')
                base[i] += count
    y_labels = [(_y(v, top), f"{v:g}") for v in sorted({0, round(top / 2), top})]
    return _frame(plot_id, title, "".join(body), list(stacks), y_labels, _day_labels(days))


def scatter(plot_id: str, title: str, points: list[dict]) -> str:
    """Gate-simulated (x) vs fleet-measured (y) success per release, with the line where they agree."""
    inner = WIDTH - LEFT - RIGHT

    def px(v: float) -> float:
        return LEFT + inner * v

    body = [f'<line class="diagonal" x1="{px(0):.1f}" y1="{_y(0, 1):.1f}" x2="{px(1):.1f}" y2="{_y(1, 1):.1f}"/>']
    body += [f'<circle class="point" cx="{px(p["simulated"]):.1f}" cy="{_y(p["fleet"], 1):.1f}" r="4" '
             f'fill="{PALETTE[0]}"><title>{escape(p["release"])}: gate {p["simulated"]:.0%}, fleet '
             f'{p["fleet"]:.0%}</title></circle><text class="tick" x="{px(p["simulated"]) + 6:.1f}" '
             f'y="{_y(p["fleet"], 1) - 6:.1f}">{escape(p["release"][:24])}</text>' for p in points]
    y_labels = [(_y(v, 1.0), f"{v:.0%}") for v in (0.0, 0.5, 1.0)]
    x_labels = [(px(v), f"gate {v:.0%}") for v in (0.0, 0.5, 1.0)]
    return _frame(plot_id, title, "".join(body), [], y_labels, x_labels)
