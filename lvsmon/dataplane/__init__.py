"""Data planes: `proxy` (embedded, userspace) and `ipvs` (kernel, via pyroute2)."""
