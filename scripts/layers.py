"""The layers of lvsmon/, read from the code's own imports; the picture in docs/.

    python scripts/layers.py            print every violation (exit 1 if any)
    python scripts/layers.py --svg      write docs/architecture.svg

Every module of the package belongs to exactly one layer (LAYERS, bottom first; the
most specific prefix wins). A module may import modules of its own layer or of the
layers below, never above, and the import graph has no cycle. Imports inside
functions count as much as top-level ones: a lazy import is still a dependency.
tests/unit/test_layers.py runs the check and compares the picture with a fresh one,
so neither can drift from the code.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lvsmon"
SVG = ROOT / "docs" / "architecture.svg"

# (layer, what it holds, module prefixes); bottom first
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "ground",
        "frozen values: what a config says, what a data plane can do",
        ("lvsmon", "lvsmon.model"),
    ),
    (
        "kit",
        "shared toolkits: config reading, logs, wire formats",
        (
            "lvsmon.configkit",
            "lvsmon.netlink",
            "lvsmon.http1",
            "lvsmon.httpmsg",
            "lvsmon.logs",
            "lvsmon.exposition",
            "lvsmon.catalog",
            "lvsmon.health.dnswire",
            "lvsmon.ha.codec",
            "lvsmon.dataplane.ipvs_codec",
            "lvsmon.privilege",
            "lvsmon.scriptsec",
        ),
    ),
    (
        "core",
        "pure logic: step(state, event, now) -> (state, actions); no sockets, no clocks",
        (
            "lvsmon.schedulers",
            "lvsmon.reconcile",
            "lvsmon.desired",
            "lvsmon.ha.machine",
            "lvsmon.ha.receive",
            "lvsmon.ha.timer",
            "lvsmon.ha.tracking",
            "lvsmon.ha.status",
            "lvsmon.health.state",
            "lvsmon.health.slowstart",
            "lvsmon.weights.control",
            "lvsmon.weights.expr",
            "lvsmon.weights.effective",
            "lvsmon.weights.templates",
            "lvsmon.dataplane.ipvs_plan",
            "lvsmon.statuspage.history",
            "lvsmon.statuspage.admin",
            "lvsmon.dataplane.nft_flow",
            "lvsmon.dataplane.nft_sched",
            "lvsmon.dataplane.nft_plan",
            "lvsmon.serving",
            "lvsmon.bgp.plan",
            "lvsmon.bgp.fingerprint",
            "lvsmon.bgp.status",
        ),
    ),
    (
        "edges",
        "I/O: data planes, probes, VRRP on the wire, load sources, HTTP, BGP via BIRD",
        (
            "lvsmon.dataplane",
            "lvsmon.health",
            "lvsmon.ha",
            "lvsmon.weights",
            "lvsmon.status",
            "lvsmon.metrics",
            "lvsmon.httpd",
            "lvsmon.webauth",
            "lvsmon.statuspage",
            "lvsmon.bgp",
            "lvsmon.sdnotify",
        ),
    ),
    (
        "config",
        "TOML -> model: one reader per section, assembled and cross-checked",
        ("lvsmon.config",),
    ),
    ("wiring", "the daemon: config -> desired -> reconcile -> plane.apply", ("lvsmon.daemon",)),
    (
        "faces",
        "what operators run: CLI, demo, status client, the VRRP process entry, importers, "
        "the systemd unit, packaged assets, the man page",
        (
            "lvsmon.cli",
            "lvsmon.demo",
            "lvsmon.client",
            "lvsmon.ha.__main__",
            "lvsmon.__main__",
            "lvsmon.importers",
            "lvsmon.service",
            "lvsmon.assets",
            "lvsmon.manpage",
        ),
    ),
)
RANK = {name: i for i, (name, _, _) in enumerate(LAYERS)}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> str:
    best, length = "", -1
    for name, _, prefixes in LAYERS:
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > length:
                best, length = name, len(prefix)
    if not best:
        raise LookupError(f"{module} is in no layer: add it to LAYERS in scripts/layers.py")
    return best


def imports(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The lvsmon modules `module` imports (anywhere in the file, lazily or not)."""
    names = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in names:
                    found.add(full)
                elif base in names:
                    found.add(base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in names)
    found.discard(module)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, mods) for m, p in mods.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)}), a layer above"
        for a, deps in sorted(edges.items())
        for b in sorted(deps)
        if RANK[layer_of(b)] > RANK[layer_of(a)]
    ]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def problems() -> list[str]:
    edges = graph()
    out = []
    for mod in edges:
        try:
            layer_of(mod)
        except LookupError as exc:
            out.append(str(exc))
    if out:
        return out
    out += upward(edges)
    out += ["import cycle: " + " <-> ".join(c) for c in cycles(edges)]
    return out


# --- the picture ---

WIDTH = 1000
ROW = 18
PAD = 10


def _groups(mods: Iterable[str]) -> list[str]:
    """'ha: announce, engine, ...' lines: a layer's modules by package."""
    by_package: dict[str, list[str]] = defaultdict(list)
    for mod in sorted(mods):
        parts = mod.split(".")
        if len(parts) <= 2:
            by_package[""].append(parts[-1])
        else:
            by_package[".".join(parts[1:-1])].append(parts[-1])
    lines = []
    for package, names in sorted(by_package.items()):
        text = ", ".join(names)
        head = f"{package}: " if package else ""
        # wrap at ~120 characters
        line = head
        for i, name in enumerate(text.split(", ")):
            piece = name + (", " if i < len(names) - 1 else "")
            if len(line) + len(piece) > 120:
                lines.append(line.rstrip())
                line = " " * len(head)
            line += piece
        lines.append(line.rstrip())
    return lines


def svg() -> str:
    edges = graph()
    members: dict[str, list[str]] = defaultdict(list)
    for mod in edges:
        members[layer_of(mod)].append(mod)
    between: dict[tuple[str, str], int] = defaultdict(int)
    for a, deps in edges.items():
        for b in deps:
            la, lb = layer_of(a), layer_of(b)
            if la != lb:
                between[(la, lb)] += 1
    bands = []
    y = PAD
    for name, what, _ in reversed(LAYERS):  # faces on top, ground at the bottom
        lines = _groups(members[name])
        height = (len(lines) + 2) * ROW + PAD
        bands.append((name, what, lines, y, height))
        y += height + 2 * ROW
    total = y
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total}" '
        f'viewBox="0 0 {WIDTH} {total}" font-family="monospace" font-size="12">',
        f'<rect width="{WIDTH}" height="{total}" fill="#ffffff"/>',
    ]
    for i, (name, what, lines, top, height) in enumerate(bands):
        out.append(
            f'<rect x="{PAD}" y="{top}" width="{WIDTH - 2 * PAD}" height="{height}" '
            'fill="#eef3fb" stroke="#4a6fa5" rx="6"/>'
        )
        out.append(
            f'<text x="{2 * PAD}" y="{top + ROW}" font-weight="bold" font-size="14">'
            f"{escape(name)}</text>"
        )
        out.append(f'<text x="{2 * PAD + 80}" y="{top + ROW}" fill="#444">{escape(what)}</text>')
        for j, line in enumerate(lines):
            out.append(
                f'<text x="{2 * PAD}" y="{top + (j + 2) * ROW}" xml:space="preserve">'
                f"{escape(line)}</text>"
            )
        if i + 1 < len(bands):
            below = [b[0] for b in bands[i + 1 :]]
            counts = ", ".join(
                f"{between[(name, lower)]} to {lower}" for lower in below if between[(name, lower)]
            )
            arrow_y = top + height
            out.append(
                f'<line x1="{6 * PAD}" y1="{arrow_y}" x2="{6 * PAD}" '
                f'y2="{arrow_y + 2 * ROW - 8}" stroke="#4a6fa5" stroke-width="2" '
                'marker-end="url(#down)"/>'
            )
            if counts:
                out.append(
                    f'<text x="{8 * PAD}" y="{arrow_y + ROW + 4}" fill="#444">'
                    f"imports: {escape(counts)}</text>"
                )
    out.insert(
        2,
        '<defs><marker id="down" markerWidth="6" markerHeight="6" refX="0" refY="3" '
        'orient="auto" markerUnits="strokeWidth"><path d="M0,0 L6,3 L0,6 z" fill="#4a6fa5"/>'
        "</marker></defs>",
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if "--svg" in argv:
        SVG.write_text(svg(), encoding="utf-8")
        print(f"wrote {SVG.relative_to(ROOT)}")
        return 0
    found = problems()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
