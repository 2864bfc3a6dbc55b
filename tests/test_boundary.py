"""The boundary between the pages and the library.

A page calls hesslib; it holds no logic the tests cannot reach. Parsed with
``ast``, every ``notebooks/*.py`` page must import hesslib, define no class,
and define functions only as small plotting helpers.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "notebooks").glob("*.py"))
MAX_HELPER_LINES = 20  # a plotting helper draws one figure; more is logic
HELPER_PREFIXES = ("plot_", "_plot")


def _tree(page):
    return ast.parse(page.read_text(), filename=str(page))


def test_there_are_pages():
    assert PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_imports_hesslib(page):
    modules = set()
    for node in ast.walk(_tree(page)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    assert any(m == "hesslib" or m.startswith("hesslib.") for m in modules), (
        f"{page.name} does not import hesslib: its logic belongs in the library")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_defines_no_class(page):
    classes = [n.name for n in ast.walk(_tree(page)) if isinstance(n, ast.ClassDef)]
    assert not classes, f"{page.name} defines classes {classes}; move them to hesslib"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_functions_are_small_plotting_helpers(page):
    functions = [n for n in ast.walk(_tree(page))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for function in functions:
        lines = function.end_lineno - function.lineno + 1
        assert function.name.startswith(HELPER_PREFIXES), (
            f"{page.name} defines {function.name}() (line {function.lineno}); "
            f"only plotting helpers named {HELPER_PREFIXES[0]}* may live in a page: "
            "move it to hesslib")
        assert lines <= MAX_HELPER_LINES, (
            f"{page.name}: {function.name}() has {lines} lines, more than "
            f"{MAX_HELPER_LINES}; move the logic to hesslib.plotting")


def test_a_long_helper_is_refused(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_HELPER_LINES))
    page = tmp_path / "99_bad.py"
    page.write_text(f"import hesslib\n\ndef plot_it():\n{body}\n")
    with pytest.raises(AssertionError, match="more than"):
        test_page_functions_are_small_plotting_helpers(page)
