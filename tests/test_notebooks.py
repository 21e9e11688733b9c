"""Run every notebook in notebooks/ from top to bottom in a fresh kernel.

The notebooks are committed with their outputs so they can be read without
running them; this test keeps them honest: each one must still execute
cleanly against the current code.  The executed copy is thrown away, so the
committed files (and report/figures, which notebook 03 redirects through
``CHAT_FIGURES_DIR``) stay untouched by a test run.

Re-executing a notebook and saving its outputs, for a commit::

    jupyter nbconvert --to notebook --execute --inplace notebooks/01_tcp_chat.ipynb
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

CELL_TIMEOUT = 120
"""Seconds one cell may run; every cell of the notebooks takes far less."""

EXPECTED = ["01_tcp_chat.ipynb", "02_udp_chat.ipynb", "03_timing.ipynb"]


def test_every_notebook_is_listed():
    present = {path.name for path in NOTEBOOKS.glob("*.ipynb")}
    assert present <= set(EXPECTED), f"add to EXPECTED: {present - set(EXPECTED)}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_executes(name, tmp_path, monkeypatch):
    # Notebook 03 saves its figures here instead of report/figures.
    monkeypatch.setenv("CHAT_FIGURES_DIR", str(tmp_path / "figures"))
    # Notebook 03: one run per throughput point instead of five (only that it runs
    # is checked here; its committed outputs come from a full run).
    monkeypatch.setenv("CHAT_TIMING_QUICK", "1")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # the kernel's cwd
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{name} failed:\n{error}", pytrace=False)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors
    # Every code cell ran (a cell left unexecuted would have no count).
    assert all(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")
