"""Sphinx configuration of the trio-gws documentation site.

Built by ``make docs`` (scripts/build-docs.sh: into docs/_build/html, warnings as
errors, ``sphinx-build -W --keep-going -n``), which ``make test`` runs too. The
source folder is the repository itself, restricted by ``include_patterns``: the
pages are Markdown (MyST) files where they already live (docs/design.md,
docs/compression.md, benchmarks/RESULTS.md...), so links between them resolve as
they do on a forge, and nothing is copied. The API reference is autodoc of
``trio_gws.__all__`` (Google-style docstrings through napoleon).

No intersphinx: it downloads the inventories of Python's and Trio's docs, and the
build must work offline. The types of the standard library and of Trio that our
signatures name are listed in ``nitpick_ignore`` instead (they show as plain names).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))  # the checkout's trio_gws, even when not installed

import trio_gws  # noqa: E402

project = "trio-gws"
author = "trio-gws developers"
copyright = "trio-gws developers"  # noqa: A001 (Sphinx's name for it)
release = version = trio_gws.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "docs/index"
# The sources: the docs folder's pages, and the benchmark write-ups where they live.
include_patterns = ["docs/**.md", "benchmarks/*.md"]
exclude_patterns = ["docs/_build", ".venv", "**/node_modules", "autobahn", ".git"]

# -- MyST ------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links, as on a forge
# benchmarks/RESULTS.md, written by benchmarks/run.py, goes from its title (#) to its
# tables' headings (###); that is no error in a generated report.
suppress_warnings = ["myst.header"]

# -- autodoc ---------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
# Our docstrings only: the ones inherited from Trio's classes name Trio's own
# reference entries, which cannot be resolved offline.
autodoc_inherit_docstrings = False
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
python_use_unqualified_type_names = True

# -- references ------------------------------------------------------------------------
nitpicky = True
# Types from outside trio-gws that our signatures name. Without intersphinx (no
# network) Sphinx cannot link them; they are shown as plain names.
nitpick_ignore = [
    ("py:class", name)
    for name in (
        # the standard library
        "collections.abc.AsyncIterable",
        "collections.abc.Awaitable",
        "collections.abc.Callable",
        "collections.abc.AsyncIterator",
        "collections.abc.Callable[[]",  # how autodoc splits Callable[[], X] in a signature
        "collections.abc.Iterable",
        "collections.abc.Mapping",
        "collections.abc.MutableMapping",
        "collections.abc.Sequence",
        "collections.abc.Set",
        "enum.Enum",
        "enum.IntEnum",
        "logging.Logger",
        "os.PathLike",
        "pathlib.Path",
        "ssl.SSLContext",
        # Trio
        "trio.SocketListener",
        "trio.SocketStream",
        "trio.TaskStatus",
        "trio.abc.AsyncResource",
        "trio.abc.Listener",
        "trio.abc.Stream",
        "trio.socket.SocketType",
        # trio-gws internals named by public signatures: the extension seam that
        # Conn's constructor takes (see docs/design.md), and the types of
        # Config.authorize and Config.http_handler (described on the API page).
        "Extension",
        "Authorize",
        "HTTPHandler",
        # what MessageWriter / write_file accept as a source (see write_file)
        "trio_gws._streams.AsyncReadable",
    )
] + [("py:exc", "trio.BrokenResourceError")]

# Pages that a page links to but that are not in this checkout yet. The link shows
# as plain text (and the build says so) instead of failing the build; once the file
# exists it is a page like the others. Keep this list empty when nothing is pending.
PENDING_PAGES = {
    # benchmarks/run.py's ablation write-up, linked from docs/design.md
    "benchmarks/ABLATION.md",
}

# -- HTML ------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"trio-gws {release}"
# The site's front page is docs/index.html; index.html at the top redirects to it.
html_extra_path = ["_root"]  # relative to this folder

LOG = logging.getLogger("trio_gws_docs")


def _public_name(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``trio_gws._conn.Conn`` (how a type hint names a class: by the private
    module that defines it) to its reference entry ``trio_gws.Conn``, for every name
    that ``trio_gws.__all__`` re-exports."""
    if node.get("refdomain") != "py":
        return None
    module, _, name = node.get("reftarget", "").rpartition(".")
    if not module.startswith("trio_gws._") or name not in trio_gws.__all__:
        return None
    node["reftarget"] = f"trio_gws.{name}"
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder,
                                             node["reftype"], f"trio_gws.{name}", node,
                                             contnode)


# Napoleon reads the first line of an attribute's or a property's docstring as
# "type: description" when it has a colon ("True once writes are refused: we began
# closing" would render as a type). Ours never start with a type (the type hints carry
# it), so attribute and property docstrings are kept as they were before napoleon.
_ATTRIBUTE_DOCS: dict[str, list[str]] = {}


def _keep_attribute_doc(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                        lines: list[str]) -> None:
    if what in ("attribute", "property"):
        _ATTRIBUTE_DOCS[name] = list(lines)


def _restore_attribute_doc(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                           lines: list[str]) -> None:
    kept = _ATTRIBUTE_DOCS.pop(name, None)
    if kept is not None:
        lines[:] = kept


class _PendingPageLinks(SphinxPostTransform):
    """Links to ``PENDING_PAGES`` that do not exist yet become their plain text."""

    default_priority = 5  # before MyST's reference resolver (9)

    def run(self, **kwargs: Any) -> None:
        for node in list(self.document.findall(addnodes.pending_xref)):
            if node.get("reftype") != "myst":
                continue
            source = Path(self.document["source"]).parent
            target = (source / node["reftarget"].split("#")[0]).resolve()
            relative = target.relative_to(REPO).as_posix() if target.is_relative_to(
                REPO) else None
            if relative in PENDING_PAGES and not target.exists():
                LOG.info("link to %s shown as text: the file is not here yet", relative)
                node.replace_self(nodes.inline("", node.astext()))


def setup(app: Sphinx) -> None:
    app.connect("missing-reference", _public_name)
    # around napoleon's own handler (priority 500)
    app.connect("autodoc-process-docstring", _keep_attribute_doc, priority=499)
    app.connect("autodoc-process-docstring", _restore_attribute_doc, priority=501)
    app.add_post_transform(_PendingPageLinks)
