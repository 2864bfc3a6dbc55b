"""Execute the book's pages with papermill, then build the HTML.

    python scripts/build_book.py --profile cpu            # every page + HTML
    python scripts/build_book.py --profile smoke --no-html
    python scripts/build_book.py --page 01 -p seed=1      # one page

Executed notebooks go to book/pages/; the HTML to _build/html/.
"""

from __future__ import annotations

import argparse
import ast
import logging
import subprocess
import sys
from pathlib import Path

from hesslib.book import execute_page, page_sources

ROOT = Path(__file__).resolve().parents[1]


def parse_parameter(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    if not name or not _:
        raise SystemExit(f"bad parameter {text!r}; write NAME=VALUE")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value  # a plain string


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu",
                        choices=("smoke", "cpu", "paper"))
    parser.add_argument("--page", action="append", default=[],
                        help="page number prefix (01, 02, ...); default all")
    parser.add_argument("-p", "--parameter", action="append", default=[],
                        help="extra papermill parameter NAME=VALUE")
    parser.add_argument("--no-html", action="store_true",
                        help="execute the pages only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    parameters = {"profile": args.profile}
    parameters.update(parse_parameter(p) for p in args.parameter)
    sources = page_sources(ROOT / "notebooks")
    if args.page:
        sources = [s for s in sources if s.name[:2] in args.page]
        if not sources:
            raise SystemExit(f"no page matches {args.page}")
    for source in sources:
        output = ROOT / "book" / "pages" / source.with_suffix(".ipynb").name
        run = execute_page(source, output, parameters=parameters,
                           cwd=ROOT / "notebooks", progress=True)
        logging.info("page %s: %.1f s (%s)", source.stem, run.seconds,
                     args.profile)
    if args.no_html:
        return 0
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", "book/",
               "--warningiserror", "--keep-going"]
    return subprocess.call(command, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
