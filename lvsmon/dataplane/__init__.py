"""Data planes: `proxy` (embedded, userspace) and `ipvs` (kernel, over generic netlink)."""
