"""lvsmon as a systemd service: the unit (rendered per data plane) and `lvsmon install-unit`."""
