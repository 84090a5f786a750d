"""README.md is generated from nbs/index.ipynb (nbdev-readme needs Quarto, which this project cannot assume).

    python tools/readme.py write   # regenerate README.md
    python tools/readme.py check   # exit 1 if README.md is out of date
"""
import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by `make readme`: edit the notebook, not this file. -->\n\n"


def render() -> str:
    "The README text for the current index notebook."
    nb = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith("#| hide")]
    body, _ = MarkdownExporter().from_notebook_node(nb)
    return HEADER + body.strip() + "\n"


if __name__ == "__main__":
    readme = ROOT / "README.md"
    if sys.argv[1:] == ["write"]:
        readme.write_text(render())
    elif sys.argv[1:] == ["check"]:
        if not readme.is_file() or readme.read_text() != render():
            sys.exit("README.md is out of date with nbs/index.ipynb: run `make readme`")
    else:
        sys.exit(__doc__)
