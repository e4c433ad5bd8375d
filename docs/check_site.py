#!/usr/bin/env python
"""Build the documentation and check the built site, offline.

Run from the repository root::

    python docs/check_site.py --clean       # the full check: fresh build, gallery run
    python docs/check_site.py --no-plot     # quick: the gallery examples are not run
    python docs/check_site.py --no-build    # check docs/_build/html as it is

It

1. builds the HTML with ``python -m sphinx -W --keep-going`` (a warning fails);
2. reads every built page and stylesheet and fails on any script, stylesheet, font,
   image or frame fetched over http(s) (links to other sites are fine: a reader can
   read the page without following them);
3. reads the one-line summaries of the API tables and fails on one that stops where
   no sentence ends (an abbreviation such as "Fig." ends autosummary's first sentence)
   or that shows TeX or a subscript as plain text (``Gamma_i(t)``);
4. opens every page from ``file://`` (as a reader opens a downloaded copy) in headless
   chromium, 1280 x 900, with every host name made unresolvable, and fails on a code
   block that needs more width than its column (it would scroll sideways), a page or
   side column that scrolls sideways, a formula that MathJax did not typeset, a font
   or image that did not load, a section heading that renders as a link, or any
   request that left the machine;
5. saves PNG screenshots of the main pages, 1280 x 900, into
   ``docs/_build/screenshots``, to look at.

The findings are printed and written to ``docs/_build/check_site.json``; the exit status
is 1 when anything failed. Chromium comes from the system's packages
(``apt-get install chromium``); ``--chromium PATH`` or ``$CHROMIUM`` picks another.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BUILD = DOCS / "_build"

# The pages to look at: (screenshot name, path with an optional #section).
SCREENSHOTS = [
    ("index", "index.html"),
    ("install", "install.html"),
    ("user_guide", "user_guide.html"),
    ("user_guide_math", "user_guide.html#the-class-weights"),
    ("user_guide_code", "user_guide.html#skorch-under-the-hood"),
    ("api", "api.html"),
    ("api_classifier", "generated/skdynloss.DynamicalLossClassifier.html"),
    (
        "api_classifier_fit",
        "generated/skdynloss.DynamicalLossClassifier.html#skdynloss.DynamicalLossClassifier.fit",
    ),
    ("api_class_weights", "generated/skdynloss.class_weights.html"),
    ("examples", "auto_examples/index.html"),
    ("example_spiral", "auto_examples/plot_spiral_dynamics.html"),
    ("benchmarks", "benchmarks.html"),
    ("search", "search.html?q=sharpness"),
]
WIDTH, HEIGHT = 1280, 900

# -- 1. build ----------------------------------------------------------------------


def clean():
    """Remove the build and what autosummary and sphinx-gallery generate."""
    for path in (BUILD, DOCS / "generated", DOCS / "auto_examples"):
        shutil.rmtree(path, ignore_errors=True)
    (DOCS / "sg_execution_times.rst").unlink(missing_ok=True)


def build(html_dir, *, plot=True, strict=True):
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", str(DOCS), str(html_dir)]
    if strict:
        cmd[3:3] = ["-W", "--keep-going"]
    if not plot:
        cmd[3:3] = ["-D", "plot_gallery=0"]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=DOCS.parent).returncode


# -- 2. assets fetched from the web --------------------------------------------------

_REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
_CSS_URL = re.compile(
    r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I
)
# rel values of <link> that make the browser fetch the target while showing the page.
_FETCHING_RELS = {
    "stylesheet",
    "preload",
    "modulepreload",
    "prefetch",
    "preconnect",
    "dns-prefetch",
    "icon",
    "shortcut",
    "apple-touch-icon",
    "manifest",
}


class _AssetParser(HTMLParser):
    """Collect the URLs a page loads (not the ones it merely links to)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.loads = []  # (tag, url)
        self._in_style = False
        self._style = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "link":
            rels = set((a.get("rel") or "").lower().split())
            if rels & _FETCHING_RELS and a.get("href"):
                self.loads.append((f"link rel={a.get('rel')}", a["href"]))
        elif tag in (
            "script",
            "img",
            "iframe",
            "source",
            "video",
            "audio",
            "embed",
            "track",
        ):
            for key in ("src", "srcset", "poster"):
                if a.get(key):
                    self.loads.append((tag, a[key].split()[0]))
        elif tag == "object" and a.get("data"):
            self.loads.append((tag, a["data"]))
        if a.get("style"):
            self.loads.extend(
                ("style attribute", u) for u in _CSS_URL.findall(a["style"])
            )
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.loads.extend(("<style>", u) for u in _CSS_URL.findall(data))


def external_assets(html_dir):
    """Every http(s) script, stylesheet, font, image or frame the site loads.

    Returns a list of ``(file, what, url)``, relative to ``html_dir``.
    """
    html_dir = Path(html_dir)
    found = []
    for path in sorted(html_dir.rglob("*.html")):
        parser = _AssetParser()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        rel = path.relative_to(html_dir).as_posix()
        found.extend(
            (rel, what, url) for what, url in parser.loads if _REMOTE.match(url)
        )
    for path in sorted(html_dir.rglob("*.css")):
        rel = path.relative_to(html_dir).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        found.extend((rel, "css url()", url) for url in _CSS_URL.findall(text))
    return found


# -- 3. API summaries ----------------------------------------------------------------

# Abbreviations after which autosummary's first sentence stops too early.
_ABBREV_END = re.compile(
    r"(?:\b(?:Fig|Figs|Eq|Eqs|Sec|Ref|Refs|Tab|Thm|No|al|cf|vs|resp|approx|etc|ca)|"
    r"\be\.g|\bi\.e)\.$",
    re.IGNORECASE,
)
# TeX or a subscript written out as text: \Gamma, $x$, Gamma_i(t), x^2.
_RAW_TEX = re.compile(
    r"\\[A-Za-z]+|\$|\b[A-Za-z]+_\{?[A-Za-z0-9]+\}?\(|\b[A-Za-z]+_[a-z0-9]\b|\^\{"
)


_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


class _SummaryParser(HTMLParser):
    """The (name, summary text outside code and maths) rows of autosummary tables."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows = []
        self._depth = {"table": 0, "td": 0, "code": 0, "math": 0}
        self._cells = None
        self._stack = []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table" and "autosummary" in classes:
            self._depth["table"] += 1
        if not self._depth["table"]:
            return
        if tag in _VOID:
            return
        if tag == "tr":
            self._cells = []
        elif tag == "td" and self._cells is not None:
            self._cells.append(["", ""])  # (all text, text outside code and maths)
        kind = "code" if tag == "code" else "math" if "math" in classes else None
        self._stack.append(kind)
        if kind:
            self._depth[kind] += 1

    def handle_endtag(self, tag):
        if not self._depth["table"]:
            return
        if tag == "table":
            self._depth["table"] -= 1
            return
        if tag == "tr" and self._cells and len(self._cells) >= 2:
            name = " ".join(self._cells[0][0].split())
            text = " ".join(self._cells[1][0].split())
            prose = " ".join(self._cells[1][1].split())
            self.rows.append((name, text, prose))
            self._cells = None
        if self._stack:
            kind = self._stack.pop()
            if kind:
                self._depth[kind] -= 1

    def handle_data(self, data):
        if self._depth["table"] and self._cells:
            self._cells[-1][0] += data
            if not (self._depth["code"] or self._depth["math"]):
                self._cells[-1][1] += data


def summary_problem(text, prose=None):
    """Why an autosummary line reads wrong, or None.

    ``text`` is the whole summary as shown; ``prose`` the part outside code and typeset
    maths (defaults to ``text``).
    """
    prose = text if prose is None else prose
    text = text.strip()
    if not text:
        return "empty summary"
    if _ABBREV_END.search(text):
        return "stops at an abbreviation, mid-sentence"
    if text[-1] not in ".!?":
        return "does not end a sentence"
    if text.count("(") != text.count(")"):
        return "unbalanced parentheses: cut mid-sentence"
    match = _RAW_TEX.search(prose)
    if match:
        return f"TeX or a subscript as plain text: {match.group(0)!r}"
    return None


def summary_problems(html_dir):
    """``(page, name, summary, why)`` for every bad line in the site's API tables."""
    html_dir = Path(html_dir)
    found = []
    for path in sorted(html_dir.rglob("*.html")):
        parser = _SummaryParser()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        for name, text, prose in parser.rows:
            why = summary_problem(text, prose)
            if why:
                found.append((path.relative_to(html_dir).as_posix(), name, text, why))
    return found


# -- 4. the pages in a browser -----------------------------------------------------

# Evaluated in each page once it has loaded: waits for MathJax and the fonts, then
# measures. Returns a JSON-able object.
_PROBE = r"""(async () => {
  const d = document, w = window, r = {};
  if (w.MathJax && w.MathJax.startup && w.MathJax.startup.promise) {
    await w.MathJax.startup.promise;
  }
  await d.fonts.ready;
  await new Promise((ok) => setTimeout(ok, 50));
  const math = [...d.querySelectorAll("span.math, div.math")];
  r.math = math.length;
  r.mathjax = !!(w.MathJax && w.MathJax.version);
  r.raw_tex = math.filter((m) => !m.querySelector("mjx-container"))
                  .map((m) => m.textContent.trim().slice(0, 80));
  r.tex_errors = [...d.querySelectorAll("mjx-merror")]
      .map((m) => (m.getAttribute("data-mjx-error") || m.textContent).slice(0, 80));
  r.overflow = [...d.querySelectorAll("pre")]
    .filter((p) => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 1)
    .map((p) => {
      const longest = p.textContent.split("\n").reduce((a, b) => (b.length > a.length ? b : a), "");
      return {kind: p.closest(".sphx-glr-script-out") ? "printed output" : "code",
              column_px: p.clientWidth, needed_px: p.scrollWidth,
              longest_line: longest.length, line: longest.slice(0, 100)};
    });
  const columns = [...d.querySelectorAll("article pre")].map((p) => p.clientWidth);
  r.code_column_px = columns.length ? Math.min(...columns) : null;
  const root = d.documentElement;
  r.page_scrolls_sideways = root.scrollWidth > root.clientWidth + 1;
  r.sidebar_overflow = [...d.querySelectorAll(".bd-sidebar-primary, .bd-sidebar-secondary")]
    .filter((e) => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
    .map((e) => e.className.split(" ")[0]);
  // A side column shown with no link in it: a title over nothing.
  r.empty_sidebars = [...d.querySelectorAll(".bd-sidebar-primary, .bd-sidebar-secondary")]
    .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().width > 0)
    .filter((e) => ![...e.querySelectorAll("nav a, .bd-toc a, .toctree-l1 a")].length)
    .map((e) => e.className.split(" ")[0]);
  r.heading_links = [...d.querySelectorAll("article :is(h1, h2, h3, h4, h5, h6)")]
    .filter((h) => [...h.querySelectorAll("a")].some((a) => !a.classList.contains("headerlink")))
    .map((h) => h.textContent.replace("#", "").trim());
  r.fonts_failed = [...d.fonts].filter((f) => f.status === "error").map((f) => f.family);
  r.requests_off_site = performance.getEntriesByType("resource").map((e) => e.name)
    .filter((n) => !/^(file|data|blob):/.test(n));
  r.broken_images = [...d.images].filter((i) => i.complete && i.naturalWidth === 0)
                                 .map((i) => i.src);
  return r;
})()"""


def find_chromium(explicit=None):
    for name in (
        explicit,
        os.environ.get("CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Browser:
    """Headless chromium driven over the DevTools protocol on a pipe (no port, no
    extra package): one page, 1280 x 900, every host name but this machine's made
    unresolvable so that a page which needs the network shows it."""

    def __init__(self, chromium, *, timeout=120):
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory()
        to_child, self._out = os.pipe()  # we write commands; chromium reads fd 3
        self._in, from_child = os.pipe()  # chromium writes fd 4; we read
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={WIDTH},{HEIGHT}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--remote-debugging-pipe",
            "about:blank",
        ]

        def fds():  # in the child: the pipe ends on fds 3 and 4
            a = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            cmd,
            preexec_fn=fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._id = 0
        self.events = []
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send(
            "Target.attachToTarget", targetId=page["targetId"], flatten=True
        )["sessionId"]
        self.send("Page.enable", session=True)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )

    def send(self, method, session=False, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self):
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buffer += chunk
        msg, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(msg)

    def open(self, url):
        """Load url and wait for its load event."""
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read())

    def evaluate(self, expression):
        result = self.send(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("text", "exception"))
        return result["result"].get("value")

    def screenshot(self, png):
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        Path(png).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._in)
        os.close(self._out)
        self._profile.cleanup()


def browse(html_dir, chromium, screenshot_dir=None):
    """Open every page of the site from file:// and probe it; screenshot the main
    ones. Returns (one dict per page, the PNG files written)."""
    html_dir = Path(html_dir).resolve()
    pages = sorted(
        p.relative_to(html_dir).as_posix()
        for p in html_dir.rglob("*.html")
        if not p.relative_to(html_dir).parts[0].startswith(("_", "."))
    )
    # A page that is screenshot is opened as the screenshot asks (search.html?q=...).
    shots = {}
    for name, target in SCREENSHOTS if screenshot_dir else []:
        shots.setdefault(target.split("#")[0], []).append(
            (name, target.partition("#")[2])
        )
    opened = {p: p for p in pages}
    for url in shots:
        opened[url.split("?")[0]] = url
    if screenshot_dir:
        Path(screenshot_dir).mkdir(parents=True, exist_ok=True)
    results, made = [], []
    browser = Browser(chromium)
    try:
        for page in pages:
            url = opened[page]
            path, _, query = url.partition("?")
            browser.open((html_dir / path).as_uri() + ("?" + query if query else ""))
            try:
                result = browser.evaluate(_PROBE)
            except RuntimeError as exc:
                result = {"error": str(exc)}
            result["page"] = page
            results.append(result)
            for name, fragment in shots.get(url, []):
                if fragment:
                    found = browser.evaluate(
                        f"(() => {{ const e = document.getElementById({json.dumps(fragment)});"
                        " if (e) e.scrollIntoView(); return !!e; })()"
                    )
                    if not found:
                        result.setdefault("error", f"no #{fragment} to screenshot")
                else:
                    browser.evaluate("window.scrollTo(0, 0)")
                browser.evaluate(
                    "new Promise((ok) => requestAnimationFrame(() => "
                    "requestAnimationFrame(ok)))"
                )
                png = Path(screenshot_dir) / f"{name}.png"
                browser.screenshot(png)
                made.append(png)
    finally:
        browser.close()
    missing = sorted(set(shots) - {opened[p] for p in pages})
    for url in missing:
        print(f"  (no {url}: no screenshot)")
    return results, made


def page_problems(result):
    """The failures in one page's probe result, as strings."""
    out = []
    if result.get("error"):
        out.append(f"probe error: {result['error']}")
    for key, label in [
        ("raw_tex", "formula not typeset"),
        ("tex_errors", "TeX error"),
        ("heading_links", "heading renders as a link"),
        ("fonts_failed", "font failed to load"),
        ("requests_off_site", "request off the machine"),
        ("broken_images", "image did not load"),
        ("sidebar_overflow", "side column scrolls sideways"),
        ("empty_sidebars", "side column with nothing in it"),
    ]:
        out.extend(f"{label}: {item}" for item in result.get(key) or [])
    if result.get("math") and not result.get("mathjax"):
        out.append("page has formulas but MathJax did not load")
    if result.get("page_scrolls_sideways"):
        out.append("the page itself scrolls sideways")
    for o in result.get("overflow") or []:
        out.append(
            f"{o.get('kind', 'code')} scrolls sideways: needs {o['needed_px']} px in a "
            f"{o['column_px']} px column ({o['longest_line']} characters: {o['line']!r})"
        )
    return out


# -- all checks --------------------------------------------------------------------


def site_problems(html_dir, chromium=None, screenshot_dir=None, echo=print):
    """Every check on a built site: ``(failures, report)``.

    ``failures`` is a list of strings, one per problem; ``chromium=None`` leaves the
    browser checks out (``report["pages"]`` is then absent). This is what ``main``
    reports and what ``tests/test_docs.py`` asserts to be empty.
    """
    html_dir = Path(html_dir)
    failures, report = [], {}
    echo("\n== assets fetched from the web")
    ext = external_assets(html_dir)
    report["external_assets"] = ext
    for page, what, url in ext:
        failures.append(f"{page}: {what} {url}")
        echo(f"  FAIL {page}: {what} {url}")
    echo(f"  {len(ext)} found")

    echo("\n== API summaries")
    summaries = summary_problems(html_dir)
    report["summaries"] = summaries
    for page, name, text, why in summaries:
        failures.append(f"{page}: summary of {name}: {why}")
        echo(f"  FAIL {page}: {name}: {why}\n       {text!r}")
    echo(f"  {len(summaries)} bad")

    if chromium is not None:
        echo(f"\n== every page in {Path(chromium).name} at {WIDTH} px, from file://")
        results, shots = browse(html_dir, chromium, screenshot_dir)
        report["pages"] = results
        for r in results:
            for problem in page_problems(r):
                failures.append(f"{r['page']}: {problem}")
                echo(f"  FAIL {r['page']}: {problem}")
        n_math = sum(r.get("math", 0) for r in results)
        columns = [r["code_column_px"] for r in results if r.get("code_column_px")]
        echo(
            f"  {len(results)} pages, {n_math} formulas; narrowest code column "
            f"{min(columns) if columns else '-'} px"
        )
        if shots:
            echo(f"\n== screenshots ({WIDTH} x {HEIGHT})")
            report["screenshots"] = [str(p) for p in shots]
            for p in shots:
                echo(f"  {p}")
    return failures, report


# -- main --------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clean",
        action="store_true",
        help="remove docs/_build and the generated pages first",
    )
    parser.add_argument(
        "--no-build", action="store_true", help="check the existing build"
    )
    parser.add_argument(
        "--no-plot",
        action="store_true",
        help="do not run the gallery examples (quick; no figures)",
    )
    parser.add_argument(
        "--allow-warnings",
        action="store_true",
        help="do not fail the build on a Sphinx warning",
    )
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="only the checks of the HTML text (no chromium)",
    )
    parser.add_argument("--chromium", help="the chromium executable")
    parser.add_argument("--html-dir", default=str(BUILD / "html"))
    parser.add_argument("--screenshots", default=str(BUILD / "screenshots"))
    args = parser.parse_args(argv)
    html_dir = Path(args.html_dir)
    failures = []
    report = {}

    if not args.no_build:
        if args.clean:
            clean()
        rc = build(html_dir, plot=not args.no_plot, strict=not args.allow_warnings)
        if rc:
            failures.append(f"sphinx-build exited with {rc}")
    if not (html_dir / "index.html").exists():
        print(f"no site at {html_dir}")
        return 1

    chromium = None if args.no_browser else find_chromium(args.chromium)
    found, checked = site_problems(html_dir, chromium, args.screenshots)
    failures.extend(found)
    report.update(checked)
    if chromium is None and not args.no_browser:
        failures.append("no chromium (apt-get install chromium, or --chromium PATH)")
        print("no chromium found")

    report["failures"] = failures
    BUILD.mkdir(exist_ok=True)
    (BUILD / "check_site.json").write_text(json.dumps(report, indent=1))
    print(f"\n{len(failures)} problem(s); details in {BUILD / 'check_site.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
