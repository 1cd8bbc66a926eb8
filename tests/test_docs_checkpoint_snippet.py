"""The orbax snippet of docs/training_and_checkpoints.md, run as a user runs it on a training run's checkpoints."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "training_and_checkpoints.md"
pytestmark = pytest.mark.xdist_group("smoke_run")  # with pytest -n: one smoke run (conftest)

# What the doc says a plain restore answers, checked on the same checkpoint.
PLAIN_RESTORE = """
plain = ocp.CheckpointManager(os.path.abspath(f"{WORKDIR}/checkpoints/{RUN}"))
try:
    plain.restore(step)
    print("PLAIN restored")
except ValueError as e:
    print("PLAIN", str(e).splitlines()[0])
plain.close()
"""


def _snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    found = [b for b in blocks if "ocp.CheckpointManager" in b]
    assert len(found) == 1, f"{DOC.name}: expected one python block with the orbax snippet, found {len(found)}"
    return found[0]


def test_the_doc_snippet_restores_a_training_checkpoint_with_plain_orbax(smoke_run):
    code = _snippet()
    assert 'WORKDIR = "runs/smoke"' in code
    code = code.replace('WORKDIR = "runs/smoke"', f"WORKDIR = {str(smoke_run)!r}") + PLAIN_RESTORE
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [x for x in proc.stdout.splitlines() if x.strip()]
    latest = max(int(p.name) for p in (smoke_run / "checkpoints" / "backbone").iterdir() if p.name.isdigit())
    step, model, epoch, state_step, keys = lines[0].split(" ", 4)
    assert (int(step), model, int(state_step)) == (latest, "small", latest)
    assert float(epoch) > 0
    assert keys == "['batch_stats', 'opt_state', 'params', 'rngs', 'step']"
    assert lines[1] == 'PLAIN Item "data" was found in the checkpoint, but could not be restored. Please provide a ' \
        "`CheckpointHandlerRegistry`, or call `restore` with an appropriate `CheckpointArgs` subclass."
