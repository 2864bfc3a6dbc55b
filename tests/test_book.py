"""The book's machinery: verdicts, tables, timings, figure and widget helpers."""

from pathlib import Path

import pytest

from hesslib.book import (
    PageRun,
    environment_record,
    execution_order,
    html_table,
    load_timings,
    markdown_table,
    profile_rows,
    record_timing,
)
from hesslib.plotting import (
    PAGE_WIDTH,
    figure_png,
    figure_style,
    frames_slider,
    page_figure,
)
from hesslib.profiles import PROFILES
from hesslib.store import Store
from hesslib.verdicts import (
    CLAIMS,
    Verdict,
    judge_accuracy_drop,
    load_verdicts,
    scoreboard_rows,
    store_verdict,
)


def _verdict(held=True, profile="smoke", drop=0.02):
    return judge_accuracy_drop(0.98, 0.98 - drop, small_batch=128, large_batch=4096,
                               min_accuracy_drop=0.005 if held else 0.5,
                               page="01_large_batch_setup", profile=profile)


def test_accuracy_drop_verdict_uses_the_threshold():
    held, missed = _verdict(held=True), _verdict(held=False)
    assert held.held and not missed.held
    assert held.evidence["accuracy drop"] == pytest.approx(0.02)
    assert missed.thresholds == {"min_accuracy_drop": 0.5}
    assert "4,096" in held.statement and "128" in held.statement


def test_a_drop_exactly_at_the_threshold_holds():
    verdict = judge_accuracy_drop(0.75, 0.5, small_batch=128, large_batch=256,
                                  min_accuracy_drop=0.25, page="p", profile="cpu")
    assert verdict.held


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.1, 98.0])
def test_accuracy_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"accuracy_small is .*in \[0, 1\]"):
        judge_accuracy_drop(bad, 0.5, small_batch=128, large_batch=256,
                            min_accuracy_drop=0.01, page="p", profile="cpu")


def test_verdict_refuses_unknown_claims_and_non_bool():
    with pytest.raises(ValueError, match="unknown claim 'C9'"):
        Verdict("C9", True, "s")
    with pytest.raises(TypeError, match="pass a bool"):
        Verdict("C1", 1, "s")


def test_verdict_renders_held_and_not_held():
    assert 'class="admonition tip verdict"' in _verdict(True)._repr_html_()
    shown = _verdict(False)._repr_html_()
    assert 'class="admonition warning verdict"' in shown and "C1 not held" in shown
    assert "min_accuracy_drop" in shown and "0.02" in shown


def test_verdict_html_is_escaped():
    verdict = Verdict("C2", True, "a < b & <script>", {"x<": "y>"}, {}, "p", "cpu")
    assert "<script>" not in verdict._repr_html_()


def test_verdicts_round_trip_through_the_store(tmp_path):
    store = Store(tmp_path)
    store_verdict(_verdict(True, "smoke"), store)
    store_verdict(_verdict(True, "cpu"), store)
    store_verdict(_verdict(False, "smoke"), store)  # replaces the first
    smoke = load_verdicts(store, profile="smoke")
    assert smoke == [_verdict(False, "smoke")]
    assert len(load_verdicts(store)) == 2


def test_scoreboard_has_a_row_per_claim_and_names_planned_pages():
    rows = scoreboard_rows([_verdict(True)])
    assert [r["claim"] for r in rows] == list(CLAIMS)
    assert rows[0]["verdict"] == "held (smoke)"
    assert "accuracy drop" in rows[0]["evidence"]
    assert all(r["verdict"] == "not yet computed" and r["page"] for r in rows[1:])


def test_html_table_links_only_known_cells():
    table = html_table([{"page": "01_a"}, {"page": "04_b"}],
                       links={"page": {"01_a": "01_a.html"}})
    assert '<a href="01_a.html">01_a</a>' in table and "<td>04_b</td>" in table
    with pytest.raises(ValueError, match="at least one row"):
        html_table([])


def test_execution_order_runs_the_introduction_last():
    names = ["90_r.py", "00_intro.py", "01_a.py"]
    assert [p.name for p in execution_order(map(Path, names))] == [
        "01_a.py", "90_r.py", "00_intro.py"]


def test_timings_are_recorded_per_page_and_profile(tmp_path):
    store = Store(tmp_path)
    for seconds in (3.0, 4.5):  # a second build replaces the first
        record_timing(store, PageRun(Path("01_a.py"), Path("o"), {}, seconds), "smoke")
    record_timing(store, PageRun(Path("01_a.py"), Path("o"), {}, 9.0), "cpu")
    smoke = load_timings(store, profile="smoke")
    assert [(t["page"], t["seconds"]) for t in smoke] == [("01_a", 4.5)]
    assert len(load_timings(store)) == 2


def test_profile_rows_cover_every_profile():
    rows = profile_rows(PROFILES.values())
    assert [r["profile"] for r in rows] == list(PROFILES)
    assert "mnist all" in next(r for r in rows if r["profile"] == "paper")[
        "training samples"]
    assert markdown_table(rows).count("\n") == len(rows) + 1


def test_environment_record_names_versions_and_revision():
    record = environment_record("cpu")
    assert {"python", "torch", "device", "git revision", "myst-nb"} <= set(record)


def test_page_figure_is_page_wide():
    import matplotlib

    matplotlib.use("Agg")
    with figure_style():
        fig, axes = page_figure(3)
    assert len(axes) == 3 and fig.get_size_inches()[0] == pytest.approx(PAGE_WIDTH)
    assert figure_png(fig).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="ncols=0"):
        page_figure(0)


def test_frames_slider_links_slider_and_frames_in_the_browser():
    pytest.importorskip("ipywidgets")
    from ipywidgets.widgets.widget import _instances
    from ipywidgets.widgets.widget_link import Link

    box = frames_slider([b"a", b"b", b"c"], ["1", "2", "3"], description="epoch")
    controls, stack = box.children
    play, slider, _ = controls.children
    assert stack.selected_index == slider.value == 2 and len(stack.children) == 3
    links = [w for w in _instances.values()  # ipywidgets 8's live widgets
             if isinstance(w, Link) and w.source[0] is slider]
    assert {id(link.target[0]) for link in links} >= {id(stack)}
    with pytest.raises(ValueError, match="2 frames and 1 labels"):
        frames_slider([b"a", b"b"], ["1"])
