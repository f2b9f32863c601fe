"""The example notebook runs top to bottom in a real kernel, so it cannot rot; it exercises the Python API."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "MA " in text and "of the oracle" in text  # the competence gate speaks first
    assert "|Δ| top 5%   recovers" in text and "random 5%    recovers" in text
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs)  # a figure
    assert (tmp_path / "runs" / "quickstart" / "summary.json").exists()


def test_run_view_errors_name_what_exists(tmp_path):
    import goalscope
    from goalscope.errors import GoalscopeError

    with pytest.raises(GoalscopeError, match="does not exist"):
        goalscope.load_run(tmp_path / "missing")
