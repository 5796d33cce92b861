"""Suite-wide settings.

Hypothesis never times an example (deadline=None): the suite runs on a noisy 2-core
box beside other work, where one example may take 10x the usual wall time; timing
goals live in bench/. It runs derandomized: the same examples every run, so a
landing is never decided by which random examples a run happened to draw (whether or
not the CI sets CI=true). LVSMON_EXPLORE=1 draws new examples on every run, to hunt
for counterexamples on a developer's machine.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("explore", deadline=None)
settings.register_profile("fixed", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("explore" if os.environ.get("LVSMON_EXPLORE") == "1" else "fixed")
