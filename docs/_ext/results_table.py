"""``.. results-table:: PATH``: a table drawn from a CSV that ``skdynloss reproduce``
wrote, so that the Results page shows the files' own numbers (rounded), never copies.

Options: ``:columns:`` (comma-separated CSV column names, default all; ``a±b`` shows
column ``a`` plus or minus column ``b`` in one cell), ``:headers:`` (comma-separated
titles, default the column names), ``:digits:`` (decimals of the numbers, default 3),
``:verbatim:`` (comma-separated columns shown as written, such as settings),
``:where:`` (``column=value`` or ``column!=value``: only the rows whose column has, or
has not, that value; several separated by ``;``).
"""

import csv
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList


def _cell(text, digits):
    if text in ("True", "False"):
        return "yes" if text == "True" else "no"
    try:
        value = float(text)
    except ValueError:
        return text
    if value.is_integer() and "." not in text and "e" not in text.lower():
        return str(int(value))
    return f"{value:.{digits}f}"


class ResultsTable(Directive):
    required_arguments = 1
    option_spec = {
        "columns": directives.unchanged,
        "headers": directives.unchanged,
        "digits": directives.nonnegative_int,
        "where": directives.unchanged,
        "verbatim": directives.unchanged,
    }

    def run(self):
        env = self.state.document.settings.env
        _, path = env.relfn2path(self.arguments[0])
        env.note_dependency(path)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise self.error(f"{self.arguments[0]}: no rows")
        columns = [
            c.strip() for c in self.options.get("columns", "").split(",") if c.strip()
        ]
        columns = columns or list(rows[0])
        missing = [
            part for c in columns for part in c.split("±") if part not in rows[0]
        ]
        if missing:
            raise self.error(f"{Path(path).name} has no column(s) {missing}")
        headers = [
            h.strip() for h in self.options.get("headers", "").split(",") if h.strip()
        ]
        headers = headers or columns
        if len(headers) != len(columns):
            raise self.error("as many headers as columns, please")
        for condition in filter(None, self.options.get("where", "").split(";")):
            negate = "!=" in condition
            column, value = (
                part.strip() for part in condition.split("!=" if negate else "=")
            )
            rows = [r for r in rows if (r[column] == value) != negate]
        digits = self.options.get("digits", 3)
        verbatim = {
            c.strip() for c in self.options.get("verbatim", "").split(",") if c.strip()
        }
        lines = [".. list-table::", "   :header-rows: 1", ""]
        for i, h in enumerate(headers):
            lines.append(("   * - " if i == 0 else "     - ") + h)
        for r in rows:
            for i, c in enumerate(columns):
                parts = [
                    r[part] if part in verbatim else _cell(r[part], digits)
                    for part in c.split("±")
                ]
                # A row without the value (a static loss's "difference") stays empty.
                cell = " ± ".join(parts) if parts[0] else ""
                lines.append(("   * - " if i == 0 else "     - ") + cell)
        container = nodes.container()
        self.state.nested_parse(
            StringList(lines, source=path), self.content_offset, container
        )
        return container.children


def setup(app):
    app.add_directive("results-table", ResultsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
