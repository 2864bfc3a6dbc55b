"""The book's pages: jupytext pairing, and each page's smoke run."""

from pathlib import Path

import jupytext
import nbformat
import pytest

from hesslib.book import HIDDEN_TAG, execute_page, page_sources

REPO = Path(__file__).resolve().parents[1]
PAGES = page_sources(REPO / "notebooks")


def test_there_are_pages():
    assert PAGES, "no notebooks/NN_*.py pages found"


@pytest.mark.parametrize("source", PAGES, ids=lambda p: p.stem)
def test_page_round_trips_between_py_and_ipynb(source, tmp_path):
    text = source.read_text()
    notebook = jupytext.reads(text, fmt="py:percent")
    as_ipynb = tmp_path / "page.ipynb"
    nbformat.write(notebook, as_ipynb)
    back = jupytext.writes(nbformat.read(as_ipynb, as_version=4), fmt="py:percent")
    assert _without_version(back) == _without_version(text)


def _without_version(text):
    """Drop the header line naming the jupytext version that wrote the file."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("#       jupytext_version:"))


@pytest.mark.parametrize("source", PAGES, ids=lambda p: p.stem)
def test_page_has_a_parameters_cell(source):
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "profile" in tagged[0].source


@pytest.mark.slow
@pytest.mark.parametrize("source", PAGES, ids=lambda p: p.stem)
def test_page_smoke_run(source, tmp_path, data_dir):
    output = tmp_path / source.with_suffix(".ipynb").name
    parameters = {"profile": "smoke", "data_dir": str(data_dir)}
    run = execute_page(source, output, parameters=parameters,
                       cwd=REPO / "notebooks")
    notebook = nbformat.read(output, as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code"
               for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure"
    injected = [c for c in notebook.cells
                if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and HIDDEN_TAG in injected[0].metadata["tags"]
    assert run.parameters == parameters
