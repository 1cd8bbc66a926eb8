"""The quick-look notebook (notebooks/quickstart.ipynb) runs top to bottom, headless, on a smoke run's weights.

Executed with nbclient on an ipykernel kernel, as CI does; a cell that raises fails the test. The
`.ipynb` must be the jupytext rendering of `notebooks/quickstart.py` (the source), without outputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.xdist_group("smoke_run")  # with pytest -n: one smoke run (conftest)
REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
SOURCE = REPO / "notebooks" / "quickstart.py"


def _code_and_markdown(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_notebook_is_generated_from_the_script_and_stripped():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert _code_and_markdown(nb) == _code_and_markdown(jupytext.read(SOURCE)), (
        "notebooks/quickstart.ipynb is out of date: run `jupytext --update --to ipynb notebooks/quickstart.py`"
    )
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit the notebook without outputs"


@pytest.mark.slow
def test_notebook_runs_on_smoke_weights(smoke_run, tmp_path, monkeypatch):
    figures_dir = tmp_path / "figures"
    monkeypatch.setenv("QUICKSTART_WORKDIR", str(smoke_run))  # conftest: one smoke run shared by the suite
    monkeypatch.setenv("QUICKSTART_CONFIG", "configs/synthetic.py:smoke")
    monkeypatch.setenv("QUICKSTART_SAVE_DIR", str(figures_dir))
    monkeypatch.setenv("QUICKSTART_OVERRIDES", "magnet.n_patches=8 magnet.n_points=0.5")  # some patches left out
    nb = nbformat.read(NOTEBOOK, as_version=4)
    run_in = {"metadata": {"path": str(NOTEBOOK.parent)}}  # as a user who opens it: the kernel starts in notebooks/
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources=run_in)
    t = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    seconds = time.perf_counter() - t
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # the smoke plan (64 -> 128 -> 256) with the overrides; figures: 3 stages, the final result, the progression
    assert "stage 1: scale 128x128, 4 patches, refine 4, 8192 points" in text
    assert "stage 2: scale 256x256, 16 patches, refine 8, 16384 points" in text
    assert "points refined)" in text and "total" in text
    assert len(images) == 5, f"expected 5 figures, got {len(images)} (executed in {seconds:.0f} s)"
    for name, width in (("stage0", 2), ("stage1", 3), ("stage2", 3), ("final", 4), ("progression", 5)):
        png = cv2.imread(str(figures_dir / f"{name}.png"))
        assert png is not None, name
        assert png.shape[1] >= width * 300, (name, png.shape)  # one panel per 3.4 inch at 110 dpi
