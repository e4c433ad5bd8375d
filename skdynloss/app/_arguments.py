"""What the commands check before they start: arguments that make sense, and a place
where their results can be written, so that a long run never fails at its end."""

import argparse
import os
import tempfile
from pathlib import Path


def positive_int(text):
    """An argparse type: an int of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def writable_folder(folder):
    """Create ``folder`` (and its parents) and check that a file can be written in it.

    Returns the folders it created, deepest first (to remove them again when nothing
    is written after all). Raises OSError, with a message that names the folder, when
    it cannot be created or written to.
    """
    folder = Path(folder)
    missing = []
    ancestor = folder.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    try:
        if not ancestor.is_dir():
            raise NotADirectoryError(f"{ancestor} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        # The one reliable test (permissions, read-only file systems, quotas, also for
        # root): write a file there and remove it.
        with tempfile.TemporaryFile(dir=folder, prefix=".skdynloss-check-"):
            pass
    except OSError as exc:
        remove_empty(missing)
        message = f"cannot write results in {folder} ({exc.strerror or exc})"
        raise (OSError(exc.errno, message) if exc.errno else OSError(message)) from exc
    return missing


def remove_empty(folders):
    """Remove the given folders, deepest first, where they are (still) empty."""
    for path in folders:
        try:
            os.rmdir(path)
        except OSError:
            break
