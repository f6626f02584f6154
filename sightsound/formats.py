"""How measured numbers are written in summaries and reports ("—" where a number is unknown)."""

from __future__ import annotations


def share(value) -> str:
    """A 0..1 share as a percentage with one decimal."""
    return "—" if value is None else f"{100 * value:.1f}%"


def num(value, digits: int = 4) -> str:
    """A measured number with `digits` significant digits."""
    return "—" if value is None else f"{value:.{digits}g}"


def count(value) -> str:
    return "—" if value is None else str(value)


def seconds(value) -> str:
    return "—" if value is None else f"{value:.1f}"


def best_val(counts: dict) -> str:
    """", best val accuracy 61.0%" for a training manifest's counts that have one, else ""."""
    best = counts.get("best_val_accuracy")
    return "" if best is None else f", best val accuracy {share(best)}"


def p_value(value) -> str:
    """A p-value with three significant digits, "< 0.0001" below that."""
    if value is None:
        return "—"
    return "< 0.0001" if value < 1e-4 else f"{value:.3g}"


def p_is(value) -> str:
    """"p = 0.241", or "p < 0.0001"."""
    text = p_value(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def with_interval(share_value: float, interval, percent: bool = False) -> str:
    """"57.5 (52.6–62.2)" (or "57.5% (52.6–62.2)"): a 0..1 share in percent with its interval
    [low, high]; the share alone when there is no interval."""
    text = f"{100 * share_value:.1f}" + ("%" if percent else "")
    return text + (f" ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})" if interval else "")
