"""The harness under the names of the old shared module, for scripts written against it
(``sweep_defaults.py``). New scripts import ``_harness``."""

import argparse

from _harness import (  # noqa: F401  (re-exported)
    DTYPES,
    digits,
    interleaved,
    load_note,
    median,
    print_header,
    print_table,
    setup,
    source_state,
    sync,
    timed,
    verdict,
)
from _harness import add_common_arguments as _add_common_arguments


def parser(description):
    """The old parser: --device, --threads and --dtype only (scripts add their own)."""
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    return _add_common_arguments(p, repeats=None, quick=False)
