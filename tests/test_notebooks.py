"""The book's pages: jupytext pairing, and each page's smoke run."""

from pathlib import Path

import jupytext
import nbformat
import pytest

from hesslib.book import HIDDEN_TAG, execution_order, load_timings, page_sources
from hesslib.store import Store
from hesslib.verdicts import load_verdicts

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


def _outputs(notebook):
    return [o for c in notebook.cells if c.cell_type == "code"
            for o in c.get("outputs", [])]


# Pages that hold no figure of their own: the introduction and Reproducing.
_FIGURELESS = ("00_", "90_")


@pytest.mark.slow
@pytest.mark.parametrize("source", PAGES, ids=lambda p: p.stem)
def test_page_smoke_run(source, smoke_book):
    output = smoke_book / "book" / "pages" / source.with_suffix(".ipynb").name
    notebook = nbformat.read(output, as_version=4)
    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    if not source.name.startswith(_FIGURELESS):
        # shown, or glued for a {glue:figure} (mime type "...record/image/png")
        assert any(k.endswith("image/png") for o in outputs
                   for k in o.get("data", {})), "no figure"
    injected = [c for c in notebook.cells
                if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and HIDDEN_TAG in injected[0].metadata["tags"]
    assert "profile = \"smoke\"" in injected[0].source


@pytest.mark.slow
def test_smoke_build_records_timings_and_verdicts(smoke_book):
    store = Store(smoke_book / "store")
    timed = {t["page"] for t in load_timings(store, profile="smoke")}
    assert timed == {p.stem for p in PAGES}
    assert all(t["seconds"] > 0 for t in load_timings(store))
    claims = {v.claim for v in load_verdicts(store, profile="smoke")}
    assert "C1" in claims


@pytest.mark.slow
def test_widget_state_is_saved_in_the_executed_page(smoke_book):
    output = smoke_book / "book" / "pages" / "01_large_batch_setup.ipynb"
    notebook = nbformat.read(output, as_version=4)
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    models = {m["model_name"] for m in state["state"].values()}
    assert {"IntSliderModel", "StackModel", "ImageModel", "LinkModel"} <= models


def test_execution_order_puts_the_introduction_last():
    order = execution_order(PAGES)
    assert order[-1].name.startswith("00_")
    assert [p.name for p in order[:-1]] == sorted(p.name for p in order[:-1])
