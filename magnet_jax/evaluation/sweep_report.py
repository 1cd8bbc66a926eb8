"""A sweep's table (`sweep.md`) and plots (`sweep.png`) from its rows (one results dict per point).

The plots: MagNet mIoU against GFLOPs per image and against seconds per image, every point labelled,
the Pareto front (no other point is both cheaper and better) drawn as a line, the coarse baseline (the
backbone alone, stage 0) as a horizontal line; and, when points differ in their number of stages, the
mIoU after each stage per point.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point dominates (cost <= and score >=, one strictly), by cost."""
    idx = []
    for i, (c, s) in enumerate(zip(costs, scores, strict=True)):
        dominated = any(
            (c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(zip(costs, scores, strict=True))
            if j != i
        )
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: (costs[i], scores[i]))


def sweep_table(rows: Sequence[dict]) -> str:
    """Markdown table: one row per point."""
    head = ("| point | overrides | coarse | MagNet | mIoU per stage | backbone / refiner passes | points refined "
            "| GFLOP/img | s/img | compile s | peak MB |")  # fmt: skip
    lines = [head, "|" + " --- |" * 11]
    for r in rows:
        c = r["compute"]
        stages = " → ".join(f"{100 * v:.1f}" for v in r["miou"]["stages"])
        over = ", ".join(f"`{k}={v}`" for k, v in r["overrides"].items()) or "(base)"
        points = " / ".join(f"{p:.0f}" for p in c.get("points_refined", []))
        compile_s = f"{r['compile_seconds']:.1f}" if r.get("compile_seconds") is not None else "-"
        lines.append(
            f"| {r['name']} | {over} | {100 * r['miou']['coarse']:.2f} | **{100 * r['miou']['refined']:.2f}** | "
            f"{stages} | {c['backbone_passes']} / {c['refiner_passes']} | {points} | {c.get('gflops') or 0:.1f} | "
            f"{r['seconds_per_image']:.3f} | {compile_s} | {r.get('peak_memory_mb', 0):.0f} |"
        )
    if rows:
        src = rows[0].get("peak_memory_source", "")
        lines.append("")
        lines.append(f"{rows[0]['num_images']} images per point; peak memory: {src} (on CPU it includes heap kept "
                     "from earlier points: the tuned allocator keeps freed memory, magnet_jax/allocator.py).")
    return "\n".join(lines) + "\n"


def _label_points(ax, xs: Sequence[float], ys: Sequence[float], names: Sequence[str]) -> None:
    """Point labels stacked upwards (with a leader line) where points lie close together, so none overlap."""
    xr, yr = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for x, y, name in sorted(zip(xs, ys, names, strict=True), key=lambda t: (t[1], t[0])):
        k = sum(1 for px, py in placed if abs(px - x) < 0.15 * xr and abs(py - y) < 0.08 * yr)
        placed.append((x, y))
        arrow = {"arrowstyle": "-", "lw": 0.4, "color": "gray"} if k else None
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4 + 10 * k), fontsize=7, arrowprops=arrow)


def _scatter(ax, rows: Sequence[dict], key: str, label: str) -> None:
    xs = [r["compute"]["gflops"] if key == "gflops" else r["seconds_per_image"] for r in rows]
    ys = [100 * r["miou"]["refined"] for r in rows]
    ax.scatter(xs, ys, color="tab:blue", zorder=3, label="sweep points (MagNet)")
    _label_points(ax, xs, ys, [r["name"] for r in rows])
    front = pareto_front(xs, ys)
    ax.plot([xs[i] for i in front], [ys[i] for i in front], color="tab:orange", marker="o", markersize=11,
            markerfacecolor="none", zorder=2, label="Pareto front")  # fmt: skip
    coarse = 100 * rows[0]["miou"]["coarse"]
    ax.axhline(coarse, color="gray", linestyle="--", label=f"coarse baseline ({coarse:.1f})")
    ax.set_xlabel(label)
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _scale_widths(row: dict, n: int) -> list[float]:
    """The widths of a row's stage scales (from the config it was produced with), else 0..n-1."""
    text = str(row.get("config", {}).get("magnet.scales", ""))
    widths = [float(t.split("-")[0]) for t in text.split(",") if t.strip()]
    return widths if len(widths) == n else [float(i) for i in range(n)]


def write_report(rows: Sequence[dict], workdir: str | Path) -> tuple[Path, Path]:
    """Writes `sweep.md` and `sweep.png` into `workdir`; returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workdir = Path(workdir)
    md = workdir / "sweep.md"
    md.write_text(sweep_table(rows))
    by_stages = len({len(r["miou"]["stages"]) for r in rows}) > 1
    fig, axes = plt.subplots(1, 3 if by_stages else 2, figsize=(15 if by_stages else 11, 4.6))
    _scatter(axes[0], rows, "gflops", "GFLOP per image (XLA cost analysis)")
    axes[0].set_title("mIoU vs compute")
    _scatter(axes[1], rows, "seconds", "seconds per image (median, compiled)")
    axes[1].set_title("mIoU vs time")
    if by_stages:
        ax = axes[2]
        for r in rows:
            stages = [100 * v for v in r["miou"]["stages"]]
            widths = _scale_widths(r, len(stages))
            ax.plot(widths, stages, marker="o", label=r["name"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("stage scale (width, px; the first is the coarse stage)")
        ax.set_ylabel("mIoU after the stage (%)")
        ax.set_title("mIoU after each stage")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    n = rows[0]["num_images"] if rows else 0
    fig.suptitle(f"Sweep: {len(rows)} points, {n} images each (MagNet mIoU; orange: Pareto front)")
    fig.tight_layout()
    png = workdir / "sweep.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return md, png
