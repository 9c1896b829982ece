"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parent.parent / "examples" / "quickstart.ipynb"
# The notebook's parameters, made small enough for a test (its own train for ~90 s).
QUICK = {
    '"model.units": 256': '"model.units": 32',
    '"train.steps": 1000': '"train.steps": 20',
    '"train.eval_interval": 100': '"train.eval_interval": 10',
    '"train.run_dir": "runs/notebook"': '"train.run_dir": RUN_DIR',
    '"data.corpus": "builtin:pydoc"': '"data.corpus": CORPUS',
}


def test_the_quickstart_notebook_runs_in_a_jupyter_kernel(tmp_path, corpus_file):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    for old, new in QUICK.items():
        assert old in parameters.source, old  # the test follows the notebook's own cell
        parameters.source = parameters.source.replace(old, new)
    parameters.source = f"RUN_DIR, CORPUS = {str(tmp_path / 'run')!r}, {str(corpus_file)!r}\n" + (
        parameters.source
    )
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError on any error in any cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "stopped by steps at step 20" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the validation curve
    assert any(
        "| position | character |" in o.get("data", {}).get("text/markdown", "") for o in outputs
    )
