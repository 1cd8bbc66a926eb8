"""`--mode=sweep` on the smoke run's weights: one evaluation per point, resumable, checked up front,
and each point's numbers equal to `--mode=evaluate` with the point's overrides as flags."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_main

SWEEP = str(REPO / "configs" / "sweeps" / "synthetic.py") + ":smoke"


pytestmark = pytest.mark.xdist_group("smoke_run")  # with pytest -n: one smoke run (conftest)

def _weights(smoke_run) -> list[str]:
    return [f"--config.checkpoint.backbone={smoke_run / 'weights' / 'backbone'}",
            f"--config.checkpoint.refiners={smoke_run / 'weights' / 'refiner'}"]  # fmt: skip


def _rows(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "sweep.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep_dir(smoke_run, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep") / "run"
    proc = run_main(["--config", SWEEP, "--mode=sweep", "--workdir", str(workdir), *_weights(smoke_run)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


def test_sweep_rows_table_plot_and_compute(sweep_dir):
    from magnet_jax.config import load_config_file
    from magnet_jax.inference.plan import plan_from_config

    rows = _rows(sweep_dir)
    assert [r["name"] for r in rows] == ["base", "n_points=0.25", "2 stages"]
    for row in rows:
        config = load_config_file(REPO / "configs" / "synthetic.py", "smoke")
        for key, value in row["overrides"].items():
            section, field = key.split(".")
            config[section][field] = value
        plan = plan_from_config(config)
        # the compute counts are the plan's: one whole-image pass plus one per selected patch
        assert row["compute"]["backbone_passes"] == 1 + sum(st.k for st in plan.stages)
        assert row["compute"]["refiner_passes"] == sum(st.k for st in plan.stages)
        assert row["compute"]["points_budget"] == [st.budget for st in plan.stages]
        refined, budget = row["compute"]["points_refined"], row["compute"]["points_budget"]
        assert all(p <= b for p, b in zip(refined, budget, strict=True))
        assert len(row["miou"]["stages"]) == len(plan.scales)
        assert row["num_images"] == 2 and row["seconds_per_image"] > 0 and row["compile_seconds"] > 0
        assert row["peak_memory_mb"] > 0 and row["peak_memory_source"]
        assert row["compute"]["gflops"] > 0
    assert rows[1]["compute"]["points_budget"] == [4096, 16384]  # 0.25 of 128^2 and 256^2
    table = (sweep_dir / "sweep.md").read_text()
    assert all(r["name"] in table for r in rows)
    assert (sweep_dir / "sweep.png").stat().st_size > 10_000


@pytest.mark.slow  # a second evaluation subprocess; CI time (README: Tests)
def test_point_equals_evaluate_with_its_overrides(smoke_run, sweep_dir, tmp_path):
    row = _rows(sweep_dir)[1]
    flags = [f"--config.{k}={v}" for k, v in row["overrides"].items()]
    proc = run_main(["--config", SWEEP, "--mode=evaluate", "--workdir", str(tmp_path), *_weights(smoke_run), *flags])
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["miou"] == row["miou"] and res["iou"] == row["iou"]
    assert res["compute"]["points_refined"] == row["compute"]["points_refined"]


@pytest.mark.slow  # a second sweep subprocess
def test_interrupted_sweep_resumes_only_missing_points(smoke_run, sweep_dir, tmp_path):
    lines = (sweep_dir / "sweep.jsonl").read_text().splitlines()
    (tmp_path / "sweep.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if killed during point 3
    proc = run_main(["--config", SWEEP, "--mode=sweep", "--workdir", str(tmp_path), *_weights(smoke_run)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("already in") == 2 and "sweep point 2 stages (3/3)" in proc.stdout
    rows = _rows(tmp_path)
    assert [r["name"] for r in rows] == ["base", "n_points=0.25", "2 stages"]
    assert rows[2]["miou"] == _rows(sweep_dir)[2]["miou"]


def test_bad_point_is_refused_before_any_work(tmp_path):
    from magnet_jax.commands.sweep import SweepError, apply_point
    from magnet_jax.config import load_config_file

    base = load_config_file(REPO / "configs" / "sweeps" / "synthetic.py", "smoke")
    with pytest.raises(SweepError, match=r"sweep point 'typo': unknown field config.magnet.npoints"):
        apply_point(base, {"magnet.npoints": 3}, "typo")
    with pytest.raises(SweepError, match=r"sweep point 'bad': config.magnet.n_points: expected > 0"):
        apply_point(base, {"magnet.n_points": -1.0}, "bad")
    with pytest.raises(SweepError, match=r"data.synthetic.size is fixed for a sweep"):
        apply_point(base, {"data.synthetic.size": 128}, "data")

    bad = tmp_path / "bad_sweep.py"
    bad.write_text(
        "from magnet_jax.config import load_config_file\n"
        f"def get_config():\n    return load_config_file({str(REPO / 'configs' / 'synthetic.py')!r}, 'smoke')\n"
        "def get_sweep():\n    return [{}, {'magnet.scales': '64-64,48-48'}]\n"
    )
    work = tmp_path / "work"
    proc = run_main(["--config", str(bad), "--mode=sweep", "--workdir", str(work),
                     "--config.checkpoint.backbone=/nonexistent"])  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "main.py: error: sweep point 'scales=64-64,48-48': config.magnet.scales: scales must increase"
    )
    assert not (work / "sweep.jsonl").exists()


def test_sweep_plot_labels_of_close_points_do_not_overlap():
    from matplotlib.figure import Figure

    from magnet_jax.evaluation.sweep_report import _label_points

    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    xs, ys = [10.0, 10.1, 10.2, 30.0, 10.05], [90.0, 90.1, 90.05, 60.0, 89.95]
    ax.scatter(xs, ys)
    _label_points(ax, xs, ys, ["n_points=0.1", "n_points=0.2", "n_points=0.3", "far", "n_points=0.4"])
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None
    if renderer is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the words, not their leader lines
    assert len(boxes) == 5
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (ax.texts[i].get_text(), ax.texts[j].get_text())
