"""Suite-wide settings.

Under CI (CI=true) hypothesis runs derandomized: the same examples every run, so
a landing is never decided by which random examples a run happened to draw.
Developers' runs keep exploring new examples (and find counterexamples there).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")
