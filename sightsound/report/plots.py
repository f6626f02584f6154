"""The run report's plots, drawn with matplotlib's Agg backend (no display, no pyplot state):
SFT loss (and validation accuracy), GRPO reward components and KL, and each model's accuracy per
benchmark with its 95% interval. Each returns the PNG's path relative to the run directory.
"""

from __future__ import annotations

import io
from pathlib import Path

from sightsound.report.tables import cell_interval
from sightsound.store import write_if_changed


def _figure(height: float):
    """An 8-inch-wide matplotlib figure drawn by the Agg backend (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _whole_steps(ax) -> None:
    """Step ticks at whole numbers, and a light grid."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_sft(rows: list[dict], out: Path, folder: str = "sft") -> str:
    """Loss against step, and validation accuracy on a second axis when it was measured; returns the
    path relative to the run directory."""
    fig = _figure(4)
    ax = fig.add_subplot()
    points = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    lines = ax.plot([s for s, _ in points], [v for _, v in points], marker=".", color="tab:blue", label="loss")
    ax.set(title=f"SFT ({folder}): training loss", xlabel="step", ylabel="loss")
    _whole_steps(ax)
    val = [(r["step"], 100 * r["val_accuracy"]) for r in rows if r.get("val_accuracy") is not None]
    if val:
        twin = ax.twinx()
        lines += twin.plot([s for s, _ in val], [v for _, v in val], marker="o", color="tab:orange",
                           label="val accuracy (%)")
        twin.set_ylabel("val accuracy (%)")
    ax.legend(lines, [line.get_label() for line in lines], loc="best")
    return _save(fig, out)


def plot_grpo(rows: list[dict], out: Path, folder: str = "grpo") -> str:
    """Total reward and each reward_* component against step in one panel, KL in a second; returns
    the path relative to the run directory."""
    fig = _figure(6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    names = ["reward"] + sorted({k for r in rows for k in r if k.startswith("reward_") and k != "reward_std"})
    for name in names:
        points = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        top.plot([s for s, _ in points], [v for _, v in points], marker=".",
                 label="reward (total)" if name == "reward" else name.removeprefix("reward_"),
                 linewidth=2 if name == "reward" else 1)
    top.set(title=f"GRPO ({folder}): reward", ylabel="mean reward")
    _whole_steps(top)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the panel: no curve hidden
    kl = [(r["step"], r["kl"]) for r in rows if r.get("kl") is not None]
    bottom.plot([s for s, _ in kl], [v for _, v in kl], marker=".", color="tab:red", label="KL")
    bottom.set(title=f"GRPO ({folder}): KL to the reference policy", xlabel="step", ylabel="KL")
    _whole_steps(bottom)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _save(fig, out)


def plot_accuracy(results: dict[tuple[str, str], dict], out: Path) -> str:
    """One panel per benchmark: the accuracy of each model evaluated on it as a horizontal bar with
    its 95% interval as an error bar, models top to bottom in report order, each named by its label
    (and its method, where labels repeat), and past the bar the share of its answers naming no
    option when there are any (an accuracy they decide is not a finding); returns the path relative
    to the run directory."""
    shown = {}
    for (bench, model), r in results.items():
        if r.get("count"):
            shown.setdefault(bench, []).append(model)
    benches = list(shown)
    labels = {model: r.get("label") or model for (_, model), r in results.items()}
    repeated = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    methods = {model: r.get("method") for (_, model), r in results.items()}
    names = {m: f"{labels[m]} ({methods[m]})" if labels[m] in repeated and methods[m] else labels[m] for m in labels}
    fig = _figure(1.0 + 0.45 * sum(len(models) + 2 for models in shown.values()))
    axes = fig.subplots(len(benches), 1, squeeze=False,
                        gridspec_kw={"height_ratios": [len(shown[b]) + 2 for b in benches]})[:, 0]
    for ax, bench in zip(axes, benches):
        rows = [results[(bench, model)] for model in shown[bench]]
        values = [100 * r["accuracy"] for r in rows]
        intervals = [cell_interval(r) or [r["accuracy"], r["accuracy"]] for r in rows]
        low = [100 * (r["accuracy"] - i[0]) for r, i in zip(rows, intervals)]
        high = [100 * (i[1] - r["accuracy"]) for r, i in zip(rows, intervals)]
        ax.barh(range(len(rows)), values, xerr=[low, high], color="tab:blue", alpha=0.75, capsize=4)
        for y, (value, up, r) in enumerate(zip(values, high, rows)):
            inside = value >= 12  # a short bar's number goes past its error bar, in black
            ax.text(1 if inside else value + up + 1, y, f"{value:.1f}", va="center",
                    color="white" if inside else "black", fontsize="small")
            bad = (r.get("unparsable") or {}).get("share")
            if bad:
                ax.text(value + up + (1 if inside else 9), y, f"{100 * bad:.1f}% unparsable", va="center",
                        color="dimgray", fontsize="small")
        ax.set_yticks(range(len(rows)), [names[m] for m in shown[bench]])
        ax.invert_yaxis()
        ax.set_xlim(0, 130)  # room past 100% for the unparsable note
        ax.set_xticks(range(0, 101, 20))
        count_of = max((r.get("count") or 0) for r in rows)
        ax.set(title=f"{bench} ({count_of} questions)", xlabel="accuracy (%), 95% interval")
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)


def _save(fig, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    write_if_changed(out, image.getvalue())
    return f"{out.parent.name}/{out.name}"
