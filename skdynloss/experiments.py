"""``skdynloss.experiments``: the same module as :mod:`skdynloss.app.experiments`.

The application code lives in :mod:`skdynloss.app`, which the core never imports;
this name stays so that code written for it keeps working.
"""

import sys

from .app import experiments as _module

sys.modules[__name__] = _module
