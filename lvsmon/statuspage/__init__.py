"""The live status page: `/` (HTML, CSS, one script) and its JSON twin `/status.json`.

- history.py   the daemon's own memory of connection and byte rates (a ring buffer)
- document.py  DirectorView + health + reloads + rates -> the /status.json document (pure)
- admin.py     operator actions: temporary weights and drains, CSRF tokens (pure)
- page.py      the HTTP face: routes, static files, admin requests
- config: lvsmon/config/status_page.py reads [daemon.status_page]
- static/      index.html, page.css, page.js: no build step, no framework
- status.schema.json   the document's JSON Schema (docs/status-json.md explains it)
"""
