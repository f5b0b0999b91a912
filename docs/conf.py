"""Sphinx configuration of the scdit documentation (``make docs``).

The build is offline (no intersphinx inventories are fetched) and runs with warnings as errors.
Concept pages (``docs/concepts/*.md``, MyST-NB) execute their code cells at build time, which
draws their figures; the tutorials (``tutorials/*.ipynb``) are shown with their stored outputs
and never executed here.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import scdit  # noqa: E402

# ``scdit.pl`` is an attribute alias of ``scdit.plotting`` (no module file): let autodoc import it.
sys.modules.setdefault("scdit.pl", scdit.pl)

# -- project ------------------------------------------------------------------------------------
project = "scdit"
author = "scdit developers"
copyright = "scdit developers"  # noqa: A001
version = release = scdit.__version__

# -- extensions ---------------------------------------------------------------------------------
extensions = [
    "myst_nb",  # MyST markdown, text-based notebooks (.md) and .ipynb; provides myst_parser
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}  # .rst first: stubs
master_doc = root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# offline: no intersphinx (no network at build time); references to numpy/anndata types stay
# plain text. Not nitpicky for the same reason.
nitpicky = False

# -- autodoc / autosummary / numpydoc ---------------------------------------------------------
autosummary_generate = True  # stubs in docs/api/generated/ (git-ignored)
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # not Lightning's or torch's docstrings for overrides
autodoc_typehints = "signature"  # the docstrings do not repeat the types of the parameters
autodoc_typehints_format = "short"
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- MyST / MyST-NB -----------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist", "substitution"]
myst_heading_anchors = 3
nb_execution_mode = "cache"  # concept pages run once and are cached in docs/_build/.jupyter_cache
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_excludepatterns = ["tutorials/*"]  # shown with their stored outputs, never run here
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_merge_streams = True

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"scdit {release}"
html_static_path: list[str] = []
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
}
html_show_sourcelink = False

# -- the tutorials and links to repository files ------------------------------------------------
# ``tutorials/*.ipynb`` (repository root) are copied into ``docs/tutorials/`` (git-ignored) so
# that they are inside the source tree. Every page keeps the relative links that are right on
# GitHub; while the site is read they are resolved from the page's place in the repository:
# a link to a tutorial points at its copy, a link to a page of docs/ at that page, and a link to
# another repository file (benchmarks/, data_registry/, ...), which is not part of the site,
# becomes plain text naming the file.
TUTORIALS_SRC = ROOT / "tutorials"
TUTORIALS_DST = DOCS / "tutorials"
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\(([^()\s]+)\)")


def copy_tutorials() -> list[str]:
    """Copy the tutorials into the source tree when they changed; return their names."""
    TUTORIALS_DST.mkdir(exist_ok=True)
    names = []
    for src in sorted(TUTORIALS_SRC.glob("*.ipynb")):
        text = src.read_text(encoding="utf-8")
        try:
            json.loads(text)
        except ValueError as err:
            raise ValueError(f"{src} is not a readable notebook ({err}); fix or restore it") from err
        dst = TUTORIALS_DST / src.name
        if not dst.exists() or dst.read_text(encoding="utf-8") != text:
            dst.write_text(text, encoding="utf-8")
        names.append(src.name)
    for old in TUTORIALS_DST.glob("*.ipynb"):
        if old.name not in names:
            old.unlink()
    return names


copy_tutorials()


def _origin(docname: str) -> Path:
    """The folder of the repository that page ``docname``'s relative links start from."""
    name = Path(docname).name
    if docname.startswith("tutorials/") and (TUTORIALS_SRC / f"{name}.ipynb").exists():
        return TUTORIALS_SRC
    return (DOCS / docname).parent


def _rewrite_links(app, docname: str, source: list[str]) -> None:
    """Resolve a page's relative links for the site (see above)."""
    page_dir = (DOCS / docname).parent
    origin = _origin(docname)

    def repl(match: re.Match[str]) -> str:
        text, target = match.groups()
        path, sep, anchor = target.partition("#")
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path):  # an anchor, a URL, mailto:, ...
            return match.group(0)
        resolved = Path(os.path.normpath(origin / path))
        if resolved.is_relative_to(TUTORIALS_SRC):
            resolved = TUTORIALS_DST / resolved.relative_to(TUTORIALS_SRC)
        if resolved.is_relative_to(DOCS):
            return f"[{text}]({Path(os.path.relpath(resolved, page_dir)).as_posix()}{sep}{anchor})"
        name = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else path
        return text if name in text else f"{text} (`{name}`)"

    source[0] = _MD_LINK.sub(repl, source[0])


def setup(app) -> None:
    """Register the link rewriting."""
    app.connect("source-read", _rewrite_links)
