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
# # Reproducing
#
# How this book was built, how to build it at the paper's scale, and how
# long each page took.

# %% tags=["parameters"]
profile = "cpu"  # the profile whose wall times are shown
store_dir = None  # None: $HESSLIB_STORE, else ./.store
device = "auto"  # the device recorded as the pages' device

# %% tags=["hide-cell"]
from IPython.display import Markdown, display

from hesslib.book import environment_record, load_timings, markdown_table, profile_rows
from hesslib.experiments import resolve_device
from hesslib.profiles import PROFILES
from hesslib.store import Store

store = Store(store_dir)

# %% [markdown]
# ## Profiles
#
# Every page takes a `profile` parameter; the sizes live in
# `hesslib/profiles.py`, from which this table is made.

# %% tags=["hide-input"]
display(Markdown(markdown_table(profile_rows(PROFILES.values()))))
for p in PROFILES.values():
    display(Markdown(f"- `{p.name}`: {p.description}"))

# %% [markdown]
# ## The paper's scale, on a GPU
#
# The `paper` profile trains on whole data sets for 100 epochs with batch
# sizes up to the whole training set and three seeds. On a machine with a
# CUDA GPU (pages pick it with `device="auto"`):
#
# ```bash
# make book PROFILE=paper
# # or, to keep results in a store of your choice:
# HESSLIB_STORE=/big/disk/store python scripts/build_book.py --profile paper
# ```
#
# Trained models and derived results are kept in the results store, keyed by
# their configuration, so a second build recomputes nothing.
#
# ## Rerunning one page
#
# With the build script, which also records the page's wall time:
#
# ```bash
# python scripts/build_book.py --page 01 --profile cpu -p seed=1 -p epochs=5
# ```
#
# or with papermill directly:
#
# ```bash
# jupytext --to ipynb notebooks/01_large_batch_setup.py
# papermill notebooks/01_large_batch_setup.ipynb out.ipynb -p profile smoke
# ```

# %% [markdown]
# ## Measured wall times
#
# Recorded by the build in the results store, one entry per page and
# profile (this page and the introduction run after these were taken).

# %% tags=["hide-input"]
timings = load_timings(store, profile=profile)
rows = [{"page": t["page"], "profile": t["profile"], "seconds": t["seconds"],
         "finished (UTC)": t["finished"]} for t in timings]
display(Markdown(markdown_table(rows, formats={"seconds": ".1f"}) if rows
                 else f"No wall times of the `{profile}` profile recorded yet."))

# %% [markdown]
# ## Environment

# %% tags=["hide-input"]
record = environment_record(str(resolve_device(device)))
display(Markdown(markdown_table([{"what": k, "version": v}
                                 for k, v in record.items()])))
