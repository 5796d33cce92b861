"""VM tier. `guest/` holds tests that need real kernel IPVS: they are collected
only inside the QEMU guest (LVSMON_VM=1); on the host, test_guest_suite.py
boots the guest once and runs them there, failing if any fails."""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("LVSMON_VM") == "1" else ["guest"]
