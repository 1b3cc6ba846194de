"""Plots of a torsion profile: QC points, initial and fitted MM curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bespoke_fractal.optimization.profiles import aligned, profile_errors, scored_points


def plot_profile(
    path: Path | str,
    angles: list[int] | list[float],
    qc: list[float],
    initial: list[float],
    fitted: list[float] | None,
    title: str,
    energy_cutoff: float | None = None,
    frozen: tuple[list[float], list[float] | None] | None = None,
) -> Path:
    """Write a PNG of one torsion profile and return its path.

    QC energies (relative to their minimum) are points, hollow where above `energy_cutoff` (not
    scored). `initial` and `fitted` are the relaxed MM scans, drawn as lines; `frozen` optionally
    adds the frozen-protocol profiles (initial, fitted) as thin dotted lines. Every MM curve is
    shifted and scored exactly as `profiles.profile_errors` scores it (mean MM − QC offset over the
    scored points removed), so each legend RMSE is the one in the reports.
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
    scored = scored_points(qc, energy_cutoff)[order]

    figure = Figure(figsize=(6.4, 4.6), dpi=120)
    FigureCanvasAgg(figure)  # the Agg renderer, without touching pyplot's global backend
    axes = figure.subplots()
    axes.plot(x[scored], qc_values[order][scored], "o", color="black", label="QC", zorder=3)
    if not scored.all():
        axes.plot(
            x[~scored],
            qc_values[order][~scored],
            "o",
            mfc="none",
            color="black",
            zorder=3,
            label=f"QC above {energy_cutoff:g} kcal/mol (not scored)",
        )
    curves = [
        ("initial MM, relaxed", initial, "tab:blue", "--", 1.5),
        ("fitted MM, relaxed", fitted, "tab:red", "-", 1.8),
    ]
    if frozen is not None:
        curves += [
            ("initial MM, frozen", frozen[0], "tab:blue", ":", 1.0),
            ("fitted MM, frozen", frozen[1], "tab:red", ":", 1.0),
        ]
    for label, mm, colour, style, width in curves:
        if mm is None:
            continue
        rmse, _ = profile_errors(qc, mm, energy_cutoff)
        y = np.asarray(aligned(qc, mm, energy_cutoff))[order]
        axes.plot(x, y, style, color=colour, lw=width, label=f"{label} (RMSE {rmse:.2f})")
    axes.set_xlim(-180, 180)
    axes.set_xticks(range(-180, 181, 60))
    axes.set_xlabel("dihedral angle (degrees)")
    axes.set_ylabel("relative energy (kcal/mol)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, title="RMSE kcal/mol, MM shifted by mean offset", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
