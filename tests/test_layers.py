"""The layers of the package: the core a user imports never imports the application."""

import subprocess
import sys

CORE = [
    "skdynloss",
    "skdynloss._classifier",
    "skdynloss._lockstep",
    "skdynloss._search",
    "skdynloss._persistence",
    "skdynloss.plotting",
]


def test_core_never_imports_the_application():
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('skdynloss.app')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_old_module_names_are_the_application_modules():
    from skdynloss import cli, experiments, reproduce
    from skdynloss.app import cli as app_cli
    from skdynloss.app import experiments as app_experiments
    from skdynloss.app import reproduce as app_reproduce

    assert cli is app_cli
    assert experiments is app_experiments
    assert reproduce is app_reproduce
