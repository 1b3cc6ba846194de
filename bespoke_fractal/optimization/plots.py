"""Plots of a torsion profile: QC points, initial and fitted MM curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bespoke_fractal.optimization.profiles import aligned, profile_errors


def plot_profile(
    path: Path | str,
    angles: list[int] | list[float],
    qc: list[float],
    initial: list[float],
    fitted: list[float] | None,
    title: str,
) -> Path:
    """Write a PNG of one torsion profile and return its path.

    QC energies are drawn as points, MM profiles as lines, all in kcal/mol; MM curves are shifted
    as `profile_errors` compares them (zero at the QC minimum) and the legend gives their RMSE.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = list(np.argsort(np.asarray(angles, dtype=float)))
    x = np.asarray(angles, dtype=float)[order]
    if x[-1] == 180.0 and x[0] != -180.0:  # periodic: show the 180° point at -180° too
        order.insert(0, order[-1])
        x = np.concatenate([[-180.0], x])
    qc_values = np.asarray(qc, dtype=float)
    qc_values = qc_values - qc_values.min()

    figure = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(figure)  # the Agg renderer, without touching pyplot's global backend
    axes = figure.subplots()
    axes.plot(x, qc_values[order], "o", color="black", label="QC", zorder=3)
    curves = [("initial MM", initial, "tab:blue", "--"), ("fitted MM", fitted, "tab:red", "-")]
    for label, mm, colour, style in curves:
        if mm is None:
            continue
        rmse, _ = profile_errors(qc, mm)
        y = np.asarray(aligned(qc, mm))[order]
        axes.plot(x, y, style, color=colour, label=f"{label} (RMSE {rmse:.2f} kcal/mol)")
    axes.set_xlim(-180, 180)
    axes.set_xticks(range(-180, 181, 60))
    axes.set_xlabel("dihedral angle (degrees)")
    axes.set_ylabel("relative energy (kcal/mol)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
