"""Fetch the JavaScript that renders ipywidgets in the book's static HTML.

    python scripts/fetch_widgets.py            # into book/_widgets/widgets/

The built pages load RequireJS and the embeddable widget manager
(@jupyter-widgets/html-manager) from the book's own _static/widgets/ folder,
never from a CDN, so that the HTML shows its widgets without a network. The files
come from the npm registry with `npm pack` (pinned versions below) and are
kept out of git. Nothing is fetched when they are already there.

They go to book/_widgets/widgets/, which _config.yml adds to Sphinx's static
path (so they land in _static/widgets/ of the HTML), and not into
book/_static/: Jupyter Book loads every .js file under book/_static on every
page, which would load the manager three times and render each widget thrice.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "book" / "_widgets" / "widgets"
# html-manager 1.0.x renders the widget state that ipywidgets 8 saves.
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"
REQUIREJS = "requirejs@2.3.8"
FILES = ("require.js", "embed-amd.js")  # what _config.yml's nb_ipywidgets_js loads


def _unpack(archive: Path, members: str, target: Path) -> None:
    """Copy the archive's files under ``package/<members>`` into ``target``."""
    prefix = f"package/{members}".rstrip("/")
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name
            if not member.isfile() or name.endswith(".map"):
                continue
            if name == prefix or name.startswith(prefix + "/"):
                destination = target / Path(name).name
                with tar.extractfile(member) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)


def fetch(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            "npm not found: install Node.js (apt-get install npm) to fetch the "
            f"widget manager, or copy {', '.join(FILES)} into {target} by hand"
        )
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([npm, "pack", "--silent", HTML_MANAGER, REQUIREJS],
                       cwd=scratch, check=True, stdout=subprocess.DEVNULL)
        staging = Path(scratch) / "widgets"
        staging.mkdir()
        packs = {p.name: p for p in Path(scratch).glob("*.tgz")}
        manager = next(p for n, p in packs.items() if n.startswith("jupyter-widgets"))
        requirejs = next(p for n, p in packs.items() if n.startswith("requirejs"))
        _unpack(manager, "dist", staging)
        _unpack(requirejs, "require.js", staging)
        missing = [f for f in FILES if not (staging / f).is_file()]
        if missing:
            raise SystemExit(f"the npm packages lack {missing}; check the versions")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=TARGET)
    parser.add_argument("--force", action="store_true", help="fetch again")
    args = parser.parse_args()
    if args.force or not all((args.target / f).is_file() for f in FILES):
        fetch(args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
