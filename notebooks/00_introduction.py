# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Hessian-based analysis of large batch training and robustness
#
# This book reproduces, end to end and on real data, the paper
#
# > Zhewei Yao, Amir Gholami, Qi Lei, Kurt Keutzer, Michael W. Mahoney.
# > *Hessian-based Analysis of Large Batch Training and Robustness to
# > Adversaries.* NeurIPS 2018 (arXiv:1802.08241).
#
# Every figure and number is computed by the pages of this book, which call
# the `hesslib` library; nothing is typed in by hand. Each page is a
# [jupytext](https://jupytext.readthedocs.io) notebook in `notebooks/`,
# executed by papermill with a *profile* (`smoke`, `cpu` or `paper`) that
# sets its sizes, and states which profile produced it.

# %% tags=["parameters"]
profile = "cpu"  # the profile whose verdicts the scoreboard shows
store_dir = None  # None: $HESSLIB_STORE, else ./.store

# %% [markdown]
# ## What the paper claims
#
# - **C1** Training with larger batches ends in regions of larger Hessian
#   spectrum (sharper), with lower test accuracy.
# - **C2** Large-batch training is not stuck at saddle points but in areas of
#   high curvature.
# - **C3** Points of large spectrum are less robust to adversarial
#   perturbations.
# - **C4** Robust (adversarial) training ends in flatter regions.
# - **C5** For ReLU networks the loss as a function of the input is
#   saddle-free almost everywhere (Theorem 1).
# - **C6** These hold across architectures and data sets.
#
# ## The scoreboard
#
# Each page judges the part of a claim it can, against thresholds fixed in
# its parameters before it runs, and stores a verdict. This table is filled
# from those verdicts when the book is built (this page runs last); a claim
# without one names the page planned to compute it. A claim that does not
# hold is a result, not a failure of the build.

# %% tags=["hide-input"]
from pathlib import Path

from IPython.display import HTML, Markdown, display

from hesslib.book import html_table, page_sources
from hesslib.store import Store
from hesslib.verdicts import load_verdicts, scoreboard_rows

verdicts = load_verdicts(Store(store_dir), profile=profile)
built = {p.stem: f"{p.stem}.html" for p in page_sources(Path.cwd())}
display(HTML(html_table(scoreboard_rows(verdicts), links={"page": built})))
display(Markdown(f"Verdicts of the `{profile}` profile: {len(verdicts)} stored."))

# %% [markdown]
# ## How to read, rerun and re-parameterize it
#
# - Every page starts with its question and a `parameters` cell; the
#   thresholds of its verdicts are parameters too, fixed before the run.
# - Open a page's source `notebooks/NN_name.py` in JupyterLab (`make lab`);
#   it opens as a notebook.
# - Rerun one page with other parameters:
#   `python scripts/build_book.py --page 01 -p seed=1 -p epochs=5`.
# - Rebuild the whole book: `make book` (add `PROFILE=smoke` for a quick
#   look, `PROFILE=paper` on a GPU). The last page, *Reproducing*, lists the
#   profiles, the measured wall time of each page and the environment.
