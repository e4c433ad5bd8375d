"""``skdynloss.reproduce``: the same module as :mod:`skdynloss.app.reproduce`.

The application code lives in :mod:`skdynloss.app`, which the core never imports;
this name stays so that code written for it keeps working.
"""

import sys

from .app import reproduce as _module

if __name__ == "__main__":  # python -m skdynloss.reproduce
    raise SystemExit(_module.main())
sys.modules[__name__] = _module
