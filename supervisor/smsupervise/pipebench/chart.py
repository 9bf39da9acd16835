"""The picture: delivered MB/s against the platform's rate, and where the time went.

In the terminal always (block characters); as a PNG with ``--png`` when matplotlib is installed
(``pip install 'smsupervise[plot]'``).
"""

from __future__ import annotations

from collections.abc import Sequence

from smsupervise.pipebench.results import RunResult
from smsupervise.pipebench.verdict import bound, rate_label, speed

WIDTH = 40
BLOCKS = " ▏▎▍▌▋▊▉█"


def can_draw_png() -> bool:
    """Whether the plotting extra is installed and imports."""
    try:
        import matplotlib  # noqa: F401, PLC0415 - the optional extra
    except ImportError:
        return False
    return True


def _bar(value: float, top: float, width: int = WIDTH) -> str:
    eighths = round(value / top * width * 8) if top > 0 else 0
    full, part = divmod(min(eighths, width * 8), 8)
    return ("█" * full + (BLOCKS[part] if part else "")).ljust(width)


def _label(run: RunResult) -> str:
    return f"{'cat ' if run.reader == 'cat' else ''}{rate_label(run.rate)}"


def terminal(runs: Sequence[RunResult]) -> list[str]:
    """Two bar charts: MB/s delivered (``|`` marks the rate asked for) and starved/bound shares."""
    shown = [run for run in runs if run.mb_per_s is not None]
    if not shown:
        return ["(no chart: no run read an epoch to EOF)"]
    top = max(max(run.mb_per_s or 0.0, run.rate or 0.0) for run in shown)
    width = max(len(_label(run)) for run in shown)
    lines = [f"MB/s delivered per channel ({'|'} marks the rate asked for)"]
    for run in shown:
        bar = list(_bar(run.mb_per_s or 0.0, top))
        if run.rate is not None:
            mark = min(WIDTH - 1, round(run.rate / top * WIDTH) - 1)
            if bar[max(mark, 0)] == " ":
                bar[max(mark, 0)] = "|"
        lines.append(f"  {_label(run).rjust(width)} {''.join(bar)} {speed(run.mb_per_s)}")
    lines += [
        "",
        "where the time went (▓ reader waited for data: input-starved, ░ data waited: trainer-bound)",
    ]
    for run in shown:
        total = run.starved_s + run.bound_s
        starved = round(run.starved_s / total * WIDTH) if total else 0
        split = "▓" * starved + "░" * ((WIDTH - starved) if total else 0)
        lines.append(f"  {_label(run).rjust(width)} {split.ljust(WIDTH)} {bound(run)}")
    return lines


def png(runs: Sequence[RunResult], path: str, title: str) -> None:
    """The same two charts as a PNG (needs matplotlib)."""
    import matplotlib  # noqa: PLC0415 - the optional extra, only when asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    shown = [run for run in runs if run.mb_per_s is not None]
    labels = [_label(run) for run in shown]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), constrained_layout=True)
    positions = range(len(shown))
    top.bar(positions, [run.mb_per_s or 0.0 for run in shown], color="#4878a8", label="delivered")
    asked = [(i, run.rate) for i, run in enumerate(shown) if run.rate is not None]
    if asked:
        top.scatter(
            [i for i, _ in asked], [r for _, r in asked], marker="_", s=900, color="black", label="rate"
        )
    top.set_xticks(list(positions), labels)
    top.set_ylabel("MB/s per channel")
    top.set_title(title, fontsize=9)
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    totals = [max(run.starved_s + run.bound_s, 1e-9) for run in shown]
    starved = [run.starved_s / total for run, total in zip(shown, totals, strict=True)]
    bound_share = [run.bound_s / total for run, total in zip(shown, totals, strict=True)]
    bottom.bar(positions, starved, color="#d1495b", label="input-starved (reader waited)")
    bottom.bar(positions, bound_share, bottom=starved, color="#66a182", label="trainer-bound (data waited)")
    bottom.set_xticks(list(positions), labels)
    bottom.set_ylabel("share of the time")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)
