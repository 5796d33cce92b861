"""Generate dashboards/*.json from dashboards/*.dashboard.py (`make dashboards`).

`--check` regenerates in memory and fails if a committed JSON differs.
"""

from __future__ import annotations

import argparse
import io
import json
import runpy
import sys
from pathlib import Path

from grafanalib._gen import write_dashboard

HERE = Path(__file__).resolve().parent


def render(source: Path) -> str:
    sys.path.insert(0, str(HERE))
    try:
        dashboard = runpy.run_path(str(source))["dashboard"]
    finally:
        sys.path.remove(str(HERE))
    out = io.StringIO()
    write_dashboard(dashboard, out)
    return json.dumps(json.loads(out.getvalue()), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a JSON file is stale")
    args = parser.parse_args()
    stale = []
    for source in sorted(HERE.glob("*.dashboard.py")):
        target = source.with_name(source.name.replace(".dashboard.py", ".json"))
        text = render(source)
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(HERE.parent)}")
    if stale:
        print(f"stale: {', '.join(stale)}: run `make dashboards`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
