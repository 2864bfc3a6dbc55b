"""Execute the book's pages with papermill, then build the HTML.

    python scripts/build_book.py --profile cpu            # every page + HTML
    python scripts/build_book.py --profile smoke --no-html
    python scripts/build_book.py --page 01 -p seed=1      # one page
    python scripts/build_book.py --profile smoke --out /tmp/book  # elsewhere
    python scripts/build_book.py --profile paper --nproc 4  # runs on 4 GPUs first

Pages run in book order, the introduction (00_*) last: its scoreboard reads
the verdicts the other pages stored. Each page gets the parameters `profile`
and `store_dir` (the results store: --store, else $HESSLIB_STORE, else
.store/); its wall time goes into the store (kind "timing").

Executed notebooks go to <out>/book/pages/, the HTML to <out>/_build/html/;
<out> is the repository itself unless --out names another folder, into which
the book's sources are then copied. The widget manager is fetched first
(scripts/fetch_widgets.py) so that the HTML renders widgets offline.

With --nproc N > 1, the profile's plain training runs are trained first,
data parallel on N processes (torchrun --standalone running
scripts/train_runs.py), into the same store; the pages then load them. A
page's other runs (robust training, tracked curvature) still train in the
page's kernel, on one process.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The pages' kernels, and this script, use the hesslib of this checkout, even
# where another checkout is installed in the environment.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path.insert(0, str(ROOT))

from hesslib.book import (  # noqa: E402
    execute_page,
    execution_order,
    page_sources,
    record_timing,
)
from hesslib.store import STORE_ENV, Store  # noqa: E402


def parse_parameter(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    if not name or not _:
        raise SystemExit(f"bad parameter {text!r}; write NAME=VALUE")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value  # a plain string


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu",
                        choices=("smoke", "cpu", "paper"))
    parser.add_argument("--page", action="append", default=[],
                        help="page number prefix (01, 02, ...); default all")
    parser.add_argument("-p", "--parameter", action="append", default=[],
                        help="extra papermill parameter NAME=VALUE")
    parser.add_argument("--no-html", action="store_true",
                        help="execute the pages only")
    parser.add_argument("--store", type=Path, default=None,
                        help=f"results store (default ${STORE_ENV}, else .store)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="train the profile's runs first on this many "
                             "processes with torchrun (default 1: in the pages)")
    parser.add_argument("--out", type=Path, default=ROOT,
                        help="folder of book/pages and _build (default: here)")
    return parser.parse_args(argv)


def prepare_out(out: Path) -> None:
    """Copy the book's sources into ``out`` unless it is the repository."""
    if out.resolve() == ROOT:
        return
    (out / "book").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "_config.yml", out / "_config.yml")
    for item in (ROOT / "book").iterdir():
        if item.name in ("pages", "_build"):
            continue
        if item.is_dir():
            shutil.copytree(item, out / "book" / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, out / "book" / item.name)


def train_runs(profile: str, store: Path, nproc: int) -> None:
    """Train the profile's runs into ``store`` on ``nproc`` processes."""
    if nproc < 1:
        raise SystemExit(f"--nproc must be at least 1, got {nproc}")
    if nproc == 1:
        return
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}",
               str(ROOT / "scripts" / "train_runs.py"), "--profile", profile,
               "--store", str(store)]
    logging.info("training the runs first: %s", " ".join(command))
    subprocess.run(command, check=True, cwd=ROOT)


def run(args: argparse.Namespace) -> int:
    store_root = args.store or os.environ.get(STORE_ENV) or ROOT / ".store"
    store = Store(store_root)
    train_runs(args.profile, store.root, args.nproc)
    parameters = {"profile": args.profile, "store_dir": str(store.root)}
    parameters.update(parse_parameter(p) for p in args.parameter)
    sources = execution_order(page_sources(ROOT / "notebooks"))
    if args.page:
        sources = [s for s in sources if s.name[:2] in args.page]
        if not sources:
            raise SystemExit(f"no page matches {args.page}")
    if not args.no_html:  # before copying the sources, so that one copy serves all
        subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_widgets.py")],
                       check=True)
    out = args.out.resolve()
    prepare_out(out)
    for source in sources:
        output = out / "book" / "pages" / source.with_suffix(".ipynb").name
        page_run = execute_page(source, output, parameters=parameters,
                                cwd=ROOT / "notebooks", progress=True)
        record_timing(store, page_run, args.profile)
        logging.info("page %s: %.1f s (%s)", source.stem, page_run.seconds,
                     args.profile)
    if args.no_html:
        return 0
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", "book/", "--warningiserror",
               "--keep-going"]
    return subprocess.call(command, cwd=out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
