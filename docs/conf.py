"""Sphinx configuration of the skdynloss documentation.

Build with ``sphinx-build -b html docs docs/_build/html`` (or ``make -C docs html``).
The build needs no network: intersphinx has no inventories to fetch, and the gallery
examples use only data shipped with the package or with scikit-learn.
"""

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Import the package from this source tree when it is not installed.
sys.path.insert(0, os.path.abspath(".."))
# The docs' own small extension (docs/_ext): tables drawn from the reproductions' CSVs.
sys.path.insert(0, os.path.abspath("_ext"))

# The gallery trains tiny networks, which run fastest on one intra-op thread; torch's
# default of one thread per core makes them many times slower as soon as the CPU is
# shared (a parallel build, other jobs). Set before torch is first imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# -- Project information -----------------------------------------------------------

project = "skdynloss"
author = "The skdynloss developers"
copyright = "2026, The skdynloss developers"
try:
    release = version("skdynloss")  # the single source: pyproject.toml
except PackageNotFoundError:
    release = "0+unknown"
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    # Ships MathJax 3.2.2 (Apache-2.0) and copies it into the build's _static/mathjax,
    # pointing mathjax_path there: formulas render without a network (Sphinx's own
    # default loads MathJax from a CDN).
    "sphinx-mathjax-offline",
    "sphinx.ext.intersphinx",
    "sphinx.ext.extlinks",
    "sphinx_gallery.gen_gallery",
    "results_table",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
root_doc = "index"
default_role = "literal"
# The page outline of an API page lists "fit", not "DynamicalLossClassifier.fit": the
# long names would not fit the side column.
toc_object_entries_show_parents = "hide"

# ``:arxiv:`2102.03793``` in docstrings and pages links to the abstract.
extlinks = {"arxiv": ("https://arxiv.org/abs/%s", "arXiv:%s")}

# No inventories: the build must not touch the network. Add mappings here (and accept
# the fetch at build time) to link to Python, NumPy, scikit-learn or PyTorch objects.
intersphinx_mapping = {}

# -- autodoc / autosummary / numpydoc ----------------------------------------------

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"  # types are in the numpydoc sections
# The class template lists the methods; numpydoc's own member tables would repeat
# them, and for torch modules would list every inherited nn.Module method.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# Turn "array-like", "int", ... in parameter types into cross-references only where a
# target exists; without intersphinx most would be broken links.
numpydoc_xref_param_type = False

# -- sphinx-gallery ----------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "plot_gallery": "True",
    # Every example must run: a failing one fails the build.
    "only_warn_on_example_error": False,
    "abort_on_example_error": False,
    # Mini-galleries of examples on the API pages of the names they use.
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("skdynloss",),
    "reference_url": {"skdynloss": None},
    # The computation-times pages load jQuery and DataTables from CDNs; leave them out.
    "write_computation_times": False,
}

# -- HTML --------------------------------------------------------------------------

# The theme of scikit-learn, NumPy, SciPy and pandas. Everything a page loads ships
# with the theme, Sphinx, sphinx-gallery or sphinx-mathjax-offline (docs/check_site.py
# checks that no page references an http(s) script, stylesheet or font).
html_theme = "pydata_sphinx_theme"
html_title = f"skdynloss {release}"
html_short_title = "skdynloss"
html_static_path = ["_static"]
html_css_files = ["skdynloss.css"]
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    "logo": {"text": "skdynloss"},
    "navbar_align": "left",
    "header_links_before_dropdown": 5,
    "navigation_depth": 2,
    "show_nav_level": 1,
    "show_toc_level": 2,
    # The right-hand column: the sections of the page.
    "secondary_sidebar_items": ["page-toc"],
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
    # Version switcher, announcement banner and analytics would each fetch a file from
    # the web; none is used.
    "check_switcher": False,
    "show_version_warning_banner": False,
    "navigation_with_keys": False,
    "pygments_light_style": "tango",
    "pygments_dark_style": "monokai",
}
# Pages without sub-pages get no left-hand column: it would hold nothing but its
# title, and the text gets its width (the top bar links every section). The index's
# toctree is the top bar itself; the API page and the gallery have sub-pages.
html_sidebars = {
    _page.stem: []
    for _page in Path(__file__).parent.glob("*.rst")
    if _page.stem == "index" or "toctree" not in _page.read_text(encoding="utf-8")
}
html_context = {"default_mode": "light"}


# -- Hooks -------------------------------------------------------------------------


def _skip_metadata_request_methods(app, what, name, obj, skip, options):
    # scikit-learn generates set_fit_request & co. on every estimator class; their
    # docstrings point into scikit-learn's own docs and say nothing about this package.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_request_methods)
