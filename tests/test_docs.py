"""The documentation site: its configuration, and the checks of docs/check_site.py.

The fast tests read docs/conf.py as text and feed the checker small pages written
here, so they need neither Sphinx nor a browser. The slow ones build the docs (without
running the gallery) and need the ``docs`` extra; the browser test also needs
chromium. Each is skipped where what it needs is missing.
"""

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"


def _load_check_site():
    spec = importlib.util.spec_from_file_location("check_site", DOCS / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_site = _load_check_site()


def _conf_literals():
    """The names docs/conf.py assigns a literal to (without running it: it imports
    torch and sets its thread count)."""
    tree = ast.parse((DOCS / "conf.py").read_text())
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return values


# -- configuration -----------------------------------------------------------------


def test_conf_uses_pydata_theme_and_offline_mathjax():
    conf = _conf_literals()
    assert conf["html_theme"] == "pydata_sphinx_theme"
    # MathJax from the build's _static, not from a CDN.
    assert "sphinx.ext.mathjax" in conf["extensions"]
    assert "sphinx-mathjax-offline" in conf["extensions"]
    assert "mathjax_path" not in conf  # the extension sets it to the local copy
    # The gallery's computation-times pages load jQuery and DataTables from CDNs.
    assert conf["sphinx_gallery_conf"]["write_computation_times"] is False
    for css in conf["html_css_files"]:
        assert (DOCS / "_static" / css).is_file()
    assert "_static" in conf["html_static_path"]


def test_docs_extra_lists_the_theme_and_mathjax():
    text = (DOCS.parent / "pyproject.toml").read_text()
    line = next(x for x in text.splitlines() if x.startswith("docs = ["))
    for package in (
        "sphinx",
        "numpydoc",
        "sphinx-gallery",
        "pydata-sphinx-theme",
        "sphinx-mathjax-offline",
    ):
        assert f'"{package}>=' in line, package


def test_user_guide_headings_are_not_links():
    # docutils' contents directive links every heading back to its entry by default.
    text = (DOCS / "user_guide.rst").read_text()
    for block in text.split(".. contents::")[1:]:
        options = block.split("\n\n")[0]
        assert ":backlinks: none" in options


# -- the checker on pages written here ---------------------------------------------


def test_external_assets_finds_remote_scripts_styles_and_fonts(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><head>"
        '<script src="https://cdn.example.org/mathjax/tex-chtml.js"></script>'
        '<script src="_static/local.js"></script>'
        '<link rel="stylesheet" href="//cdn.example.org/bootstrap.css">'
        '<link rel="stylesheet" href="_static/theme.css">'
        '<link rel="next" href="https://example.org/next.html">'
        "<style>@import url('https://fonts.example.org/css?family=Lato');</style>"
        "</head><body>"
        '<a href="https://arxiv.org/abs/2102.03793">the paper</a>'
        '<img src="_images/figure.png">'
        "</body></html>"
    )
    static = tmp_path / "_static"
    static.mkdir()
    (static / "theme.css").write_text(
        "@font-face { src: url(fonts/a.woff2); }\n"
        "@font-face { src: url('https://fonts.example.org/b.woff2'); }\n"
    )
    found = check_site.external_assets(tmp_path)
    assert sorted(url for _, _, url in found) == [
        "//cdn.example.org/bootstrap.css",
        "https://cdn.example.org/mathjax/tex-chtml.js",
        "https://fonts.example.org/b.woff2",
        "https://fonts.example.org/css?family=Lato",
    ]
    assert {page for page, _, _ in found} == {"page.html", "_static/theme.css"}


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        ("Neural network classifier trained with a dynamical loss function.", None),
        ("Cross-entropy with oscillating class weights (a dynamical loss).", None),
        ("Is the fit converged?", None),
        ("Interleaved spiral arms, the data of the paper's Fig.", "abbreviation"),
        ("Top eigenvalues of the Hessian, e.g.", "abbreviation"),
        ("Class weights Gamma_i(t) of the dynamical loss.", "TeX"),
        (r"Class weights \Gamma of the dynamical loss.", "TeX"),
        ("Top eigenvalues of the loss Hessian (sharpness) of", "sentence"),
        ("Top eigenvalues (by Lanczos.", "parentheses"),
        ("", "empty"),
    ],
)
def test_summary_problem(summary, problem):
    why = check_site.summary_problem(summary)
    if problem is None:
        assert why is None
    else:
        assert why is not None and problem in why


def test_summary_problems_reads_autosummary_tables(tmp_path):
    # Code and typeset maths may hold underscores and backslashes; prose may not.
    (tmp_path / "api.html").write_text(
        '<table class="autosummary longtable table">'
        '<tr><td><a><code><span class="pre">class_weights</span></code></a></td>'
        '<td><p>Weights <span class="math notranslate nohighlight">\\(\\Gamma_i(t)\\)'
        "</span> of the loss.</p></td></tr>"
        '<tr><td><a><code><span class="pre">fit_twice</span></code></a></td>'
        '<td><p>Fit with <code><span class="pre">sample_weight</span></code>.</p></td></tr>'
        '<tr><td><a><code><span class="pre">make_spiral</span></code></a></td>'
        "<td><p>The data of the paper's Fig.</p></td></tr>"
        '<tr><td><a><code><span class="pre">schedule</span></code></a></td>'
        "<td><p>Class weights Gamma_i(t) over<br/>time.</p></td></tr>"
        "</table>"
        "<table><tr><td>not</td><td>an autosummary table, Fig.</td></tr></table>"
    )
    found = check_site.summary_problems(tmp_path)
    assert [(page, name) for page, name, _, _ in found] == [
        ("api.html", "make_spiral"),
        ("api.html", "schedule"),
    ]


def test_page_problems_reports_each_failure():
    result = {
        "page": "user_guide.html",
        "math": 2,
        "mathjax": True,
        "raw_tex": [r"\(\Gamma_i\)"],
        "heading_links": ["The dynamical loss"],
        "requests_off_site": ["https://cdn.example.org/x.js"],
        "overflow": [
            {"column_px": 600, "needed_px": 700, "longest_line": 88, "line": "x = 1"}
        ],
        "page_scrolls_sideways": True,
    }
    problems = check_site.page_problems(result)
    assert len(problems) == 5
    assert problems[-1].startswith("code scrolls sideways: needs 700 px in a 600 px")
    assert (
        check_site.page_problems({"page": "index.html", "math": 1, "mathjax": True})
        == []
    )
    assert check_site.page_problems({"page": "a.html", "math": 1, "mathjax": False})


def test_existing_build_loads_nothing_from_the_web():
    html = DOCS / "_build" / "html"
    if not (html / "index.html").exists():
        pytest.skip("no build in docs/_build/html")
    assert check_site.external_assets(html) == []


# -- a real build (slow) -----------------------------------------------------------


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    for module in ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme"):
        pytest.importorskip(module)
    if importlib.util.find_spec("sphinx-mathjax-offline") is None:
        pytest.skip("sphinx-mathjax-offline is not installed")
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("docs") / "html"
    # The gallery pages are built without running the examples (test_examples.py
    # runs them); everything else is the real build, warnings as errors.
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-W",
        "--keep-going",
        "-q",
        "-D",
        "plot_gallery=0",
        str(DOCS),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=DOCS.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_build_serves_mathjax_itself_and_loads_nothing_from_the_web(built_site):
    assert check_site.external_assets(built_site) == []
    assert (built_site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (built_site / "_static" / "mathjax" / "output" / "chtml" / "fonts").is_dir()
    index = (built_site / "index.html").read_text()
    assert 'src="_static/mathjax/tex-chtml.js"' in index
    assert "pydata-sphinx-theme" in index


@pytest.mark.slow
def test_api_summaries_are_whole_sentences(built_site):
    assert check_site.summary_problems(built_site) == []


NO_CHROMIUM = (
    "no chromium on this machine (apt-get install chromium, or set $CHROMIUM): the "
    "browser checks of docs/check_site.py did not run"
)


@pytest.mark.slow
def test_site_has_no_problem_that_check_site_reports(built_site):
    # Exactly the checks of ``python docs/check_site.py --no-plot``, no exception: the
    # test fails whenever the checker reports anything (the browser part needs
    # chromium; without it the HTML-text checks still run, and the test then skips).
    chromium = check_site.find_chromium()
    failures, report = check_site.site_problems(built_site, chromium, echo=_silent)
    assert failures == []
    if chromium is None:
        pytest.skip(NO_CHROMIUM)
    assert len(report["pages"]) >= 20
    assert sum(r.get("math", 0) for r in report["pages"]) > 20


def _silent(*args, **kwargs):
    pass


def test_page_problems_reports_an_empty_sidebar():
    result = {"page": "results.html", "empty_sidebars": ["bd-sidebar-primary"]}
    assert check_site.page_problems(result) == [
        "side column with nothing in it: bd-sidebar-primary"
    ]


def test_pages_without_sub_pages_get_no_sidebar():
    # docs/conf.py gives every page without a toctree of its own no left column.
    source = (DOCS / "conf.py").read_text()
    namespace = {"Path": Path, "__file__": str(DOCS / "conf.py")}
    start = source.index("html_sidebars = {")
    end = source.index("}", start) + 1
    exec(source[start:end], namespace)
    sidebars = namespace["html_sidebars"]
    for page in ("index", "install", "user_guide", "results", "lockstep", "defaults"):
        assert sidebars[page] == [], page
    assert "api" not in sidebars


@pytest.mark.slow
def test_browser_check_fails_without_the_bundled_mathjax(built_site, tmp_path):
    # The same site with MathJax taken out and a script from a CDN put in: the
    # formulas stay raw TeX, and the request is seen even though it cannot succeed.
    chromium = check_site.find_chromium()
    if chromium is None:
        pytest.skip(NO_CHROMIUM)
    site = tmp_path / "html"
    shutil.copytree(built_site, site)
    shutil.rmtree(site / "_static" / "mathjax")
    page = site / "user_guide.html"
    page.write_text(
        page.read_text().replace(
            "</head>", '<script src="https://cdn.example.org/x.js"></script></head>'
        )
    )
    assert check_site.external_assets(site) == [
        ("user_guide.html", "script", "https://cdn.example.org/x.js")
    ]
    results, _ = check_site.browse(site, chromium)
    by_page = {r["page"]: r for r in results}
    guide = check_site.page_problems(by_page["user_guide.html"])
    assert any(p.startswith("formula not typeset") for p in guide)
    assert "page has formulas but MathJax did not load" in guide
    assert any(
        p.startswith("request off the machine: https://cdn.example.org/x.js")
        for p in guide
    )


def test_results_tables_are_drawn_from_the_csv_files(tmp_path):
    """docs/_ext/results_table.py: the Results page's tables come from the CSVs that
    ``skdynloss reproduce`` wrote, with the columns chosen, rounded, filtered."""
    pytest.importorskip("sphinx")
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.csv").write_text(
        "task,width,mean,std,better,amplitude,difference\n"
        "spiral,100,0.93456,0.0151,True,2.51,0.01\n"
        "digits,100,0.9,0.004,False,1.0,\n"
        "noisy,100,0.8,0.004,False,1.0,\n"
    )
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(DOCS / '_ext')!r})\n"
        "extensions = ['results_table']\n"
    )
    (src / "index.rst").write_text(
        "T\n=\n\n"
        ".. results-table:: t.csv\n"
        "   :columns: task, width, mean±std, better, amplitude, difference±std\n"
        "   :headers: task, width, held-out, dyn better, A, difference\n"
        "   :where: task!=digits\n"
        "   :verbatim: amplitude\n"
    )
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "text", str(src), str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    text = (out / "index.txt").read_text()
    assert "0.935 ± 0.015" in text and "yes" in text and "held-out" in text
    assert "digits" not in text and "0.900" not in text
    # A verbatim column as written (2.51, not 2.510); a row without a value of an
    # a±b column shows nothing there, not a lone "±".
    assert " 2.51 " in text and "2.510" not in text and "0.010 ± 0.015" in text
    # mean±std in both rows shown, difference±std only in the spiral's.
    assert text.count("±") == 3
    # A column the file does not have is an error naming it.
    (src / "index.rst").write_text(
        "T\n=\n\n.. results-table:: t.csv\n   :columns: nope\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "text", str(src), str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "nope" in run.stderr


def test_site_problems_is_what_the_checker_fails_on(tmp_path):
    # One function behind both: a problem it finds fails the command line too.
    (tmp_path / "index.html").write_text(
        '<html><head><script src="https://cdn.example.org/x.js"></script></head>'
        '<body><table class="autosummary"><tr><td><code>make_spiral</code></td>'
        "<td><p>The data of the paper's Fig.</p></td></tr></table></body></html>"
    )
    failures, report = check_site.site_problems(tmp_path, None, echo=_silent)
    assert len(failures) == 2 and "pages" not in report
    assert any("cdn.example.org" in f for f in failures)
    assert any("make_spiral" in f for f in failures)
    rc = check_site.main(["--no-build", "--no-browser", "--html-dir", str(tmp_path)])
    assert rc == 1
