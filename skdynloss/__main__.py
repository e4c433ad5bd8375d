"""``python -m skdynloss``: the same as the ``skdynloss`` command."""

from .app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
