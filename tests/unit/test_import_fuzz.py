"""`lvsmon import` on files other people wrote: whatever the input, the import ends with
a report naming file:line (exit 1 when it has errors), never a traceback, never a hang,
in bounded memory; and a report without errors means `lvsmon check` accepts the TOML.

Seeds: the import corpus (tests/data/import), keepalived's documented samples
(/usr/share/doc/keepalived/samples, when installed) and `ipvsadm -S -n` listings.
Hypothesis edits them with tests/fuzz/mutations.py's text edits (lines deleted,
doubled, swapped, truncated at any byte, hostile words and bytes, unbalanced and deep
braces, a megabyte line); named regressions are the cases the fuzzer found; hostile
files (missing, directories, FIFOs, /dev/zero, huge, include loops, globs matching
thousands of files) go through the real filesystem; a sample goes through the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsmon import config
from lvsmon.importers import Translation, translate, verify
from lvsmon.importers.report import MAX_FINDINGS
from lvsmon.importers.source import FileSource, MemorySource, Source
from tests.fuzz.mutations import TEXT_EDITS, WORDS, edit_text
from tests.unit.test_import_grammar import IPVSADM

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "import"
SAMPLES = Path("/usr/share/doc/keepalived/samples")

IPVSADM_SAVE = """\
-A -t 192.0.2.10:80 -s wlc -p 300 -M 255.255.255.0
-a -t 192.0.2.10:80 -r 10.0.0.3:8080 -m -w 1
-A -u 192.0.2.10:53 -s sh -b flag-1,flag-2
-a -u 192.0.2.10:53 -r 10.0.0.3:53 -g -w 1 -x 100 -y 50
-A -f 25 -s rr
-a -f 25 -r 10.0.0.2:0 -i -w 1
-A -t [2001:db8::10]:443 -s mh -b mh-port
-a -t [2001:db8::10]:443 -r [2001:db8::2]:8443 -m -w 0
"""
IPVSADM_SCRIPT = """\
#!/bin/sh
ipvsadm -C
ipvsadm --set 900 120 300
ipvsadm -A -t 192.0.2.20:443 -s rr --persistent 60
ipvsadm -a -t 192.0.2.20:443 -r 10.0.0.4 -g -w 2
ipvsadm -e -t 192.0.2.20:443 -r 10.0.0.4 -w 5
ipvsadm --start-daemon master --mcast-interface eth0 --syncid 3
"""


def _corpus_files() -> dict[str, str]:
    """Every corpus file (includes too) by path, so a mutated main file still includes."""
    files = {
        str(p): p.read_text(errors="replace")
        for p in DATA.rglob("*")
        if p.is_file() and not p.name.endswith(".toml")
    }
    if SAMPLES.is_dir():
        files.update({str(p): p.read_text(errors="replace") for p in SAMPLES.iterdir()})
    return files


FILES = _corpus_files()
IPVSADM_SEEDS = {"/r/save": IPVSADM, "/r/save2": IPVSADM_SAVE, "/r/script": IPVSADM_SCRIPT}
FILES.update(IPVSADM_SEEDS)
SEEDS = sorted(
    [
        *(("keepalived", p) for p in FILES if p.endswith(".conf") and "/conf.d/" not in p),
        *(("keepalived", p) for p in FILES if p.startswith(str(SAMPLES))),
        *(("lvs.cf", p) for p in FILES if p.endswith(".cf")),
        *(("ipvsadm", p) for p in IPVSADM_SEEDS),
    ]
)
SECONDS = 10  # one import, on this 2-core box beside other work


def judge(fmt: str, path: str, source: Source, files: set[str] | None = None) -> Translation:
    """What `lvsmon import` does with a file: translate, then the real checker. Asserts
    what the import promises; any exception propagates (the test names the input)."""
    start = time.monotonic()
    result = translate(fmt, path, source, config_id="lb1")
    verify(result, path)
    assert time.monotonic() - start < SECONDS, f"{fmt} {path}: took too long"
    report = result.report
    for finding in report.findings:  # file:line, a file the import read or was asked for
        assert finding.origin.line >= 0 and finding.origin.file, finding
        assert files is None or finding.origin.file in files, finding
        assert f"{finding.origin.file}:{finding.origin.line}: " in finding.render()
    assert len(report.findings) <= MAX_FINDINGS
    assert report.render().endswith(" notes\n") or report.render().endswith(" note\n")
    if not report.has_errors:  # what `lvsmon check` runs on the TOML
        config.loads(result.toml, "<import>")
    return result


def test_the_seeds_cover_every_format() -> None:
    kinds = [fmt for fmt, _ in SEEDS]
    assert kinds.count("keepalived") >= 15 and kinds.count("lvs.cf") >= 3
    assert kinds.count("ipvsadm") == 3
    for fmt, path in SEEDS:  # unmutated, each seed is what the corpus says it is
        judge(fmt, path, MemorySource(FILES))


# --- Hypothesis: text edits of every seed ---

edits = st.tuples(
    st.sampled_from(TEXT_EDITS),
    st.integers(0, 2**20),
    st.integers(0, 2**10),
    st.sampled_from(WORDS) | st.text(max_size=12),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(edits, min_size=1, max_size=4))
def test_any_edit_of_any_seed(
    seed: tuple[str, str], changes: list[tuple[str, int, int, str]]
) -> None:
    fmt, path = seed
    text = FILES[path]
    for edit, a, b, word in changes:
        text = edit_text(text, edit, a, b, word)
    judge(fmt, path, MemorySource({**FILES, path: text}), {*FILES, path})


# --- what the fuzzer found: each a named regression, with the error it must give ---

KEEPALIVED_FOUND = {
    # nested ~SEQs multiplied past any per-~SEQ bound: 3.6e9 lines, a hang
    "nested-seq": ("~SEQ(i,1,60000) ~SEQ(j,1,60000) x $i $j\n", "repeated lines in all"),
    "seq-1e9": ("~SEQ(i,1,1000000000) real_server 10.0.0.$i 80\n", "1000000000 repetitions"),
    # a definition that uses itself twice doubles at each of 32 levels: 2**32 words
    "self-doubling-definition": ("$A=$A $A\nx $A\n", "more than 16384"),
    "octuple-definitions": (  # $B is eight $A, $C eight $B, ...: 8**8 words
        "$A=x\n"
        + "".join(f"${n}={f'${p} ' * 8}\n" for p, n in zip("ABCDEFG", "BCDEFGH", strict=True))
        + "x $H\n",
        "more than 16384",
    ),
    # {a,b} repeated 30 times: 2**30 include alternatives built before any glob
    "include-brace-bomb": ("include " + "{a,b}" * 30 + "\n", "more than 4096 alternatives"),
    # one word of megabytes: tokenize copied the word at each character (quadratic)
    "giant-word": ("x" * 2**20 + "\n", "more than 16384: not read"),
    "giant-escapes": ('x "' + "\\x4142" * 50000 + '"\n', "more than 16384: not read"),
    "many-unclosed-parameters": ("x " + "${A " * 100000 + "\n", "more than 16384: not read"),
    # a megabyte of '{' kept a node and a finding per brace
    "deep-nesting-over-lines": ("x {\n" * 20000, "blocks nest deeper than 64"),
    "braces-alone": ("{\n" * 5000, "a block with no directive before it"),
    # a file that includes itself twice: 2**32 reads of a few bytes, or of none
    "include-itself-twice": ("include main\ninclude main\n", "includes itself (a loop)"),
    # str.isdigit() takes digits int() refuses: ValueError escaped
    "superscript-netmask": (
        "virtual_server 192.0.2.1 80 {\n persistence_timeout 60\n persistence_granularity ²\n"
        " real_server 10.0.0.1 80 {\n }\n}\n",
        "persistence_netmask",
    ),
    "long-digit-netmask": (
        "virtual_server 192.0.2.1 80 {\n persistence_timeout 60\n persistence_granularity "
        + "9" * 5000
        + "\n}\n",
        "persistence_netmask",
    ),
    "superscript-status-code": (
        "virtual_server 192.0.2.1 80 {\n real_server 10.0.0.1 80 {\n"
        "  HTTP_GET {\n   url {\n    path /\n    status_code ²\n   }\n  }\n }\n}\n",
        "",
    ),
    "superscript-misc-timeout": (
        "virtual_server 192.0.2.1 80 {\n real_server 10.0.0.1 80 {\n"
        "  MISC_CHECK {\n   misc_path /bin/true\n   misc_timeout ³\n  }\n }\n}\n",
        "",
    ),
    "superscript-connect-port": (
        "virtual_server 192.0.2.1 25 {\n real_server 10.0.0.1 25 {\n"
        "  SMTP_CHECK {\n   host {\n    connect_ip 10.0.0.1\n    connect_port ²\n   }\n"
        "  }\n }\n}\n",
        "connect_port",
    ),
}
LVSCF_FOUND = {
    # `key = value` with a lazy (.*?)\s*\Z: quadratic in the white space inside a value
    "spaced-value": ("service = lvs\nprimary = 1" + " " * 16000 + "x\n", ""),
    "giant-line": ("service = lvs\n" + "a = " + "b " * 2**20 + "\n", "not read"),
    "superscript-syncd-id": (
        "service = lvs\nprimary = 192.0.2.2\nbackup = 192.0.2.3\nsyncdaemon = 1\nsyncd_id = ²\n",
        "syncd_id",
    ),
    "braces": ("virtual a {\n" * 5000 + "}\n" * 10000, "closes no block"),
}
IPVSADM_FOUND = {
    "superscript-netmask": ("-A -t 192.0.2.1:80 -s rr -p 60 -M ²\n", "persistence_netmask"),
    "superscript-persistence": ("-A -t 192.0.2.1:80 -s rr -p ²\n", ""),
    "giant-line": ("-A -t 192.0.2.1:80 " + "-s rr " * 2**18 + "\n", "not read"),
}
FOUND = [
    *(("keepalived", k, *v) for k, v in KEEPALIVED_FOUND.items()),
    *(("lvs.cf", k, *v) for k, v in LVSCF_FOUND.items()),
    *(("ipvsadm", k, *v) for k, v in IPVSADM_FOUND.items()),
]


@pytest.mark.parametrize(
    ("fmt", "name", "text", "expected"), FOUND, ids=[f"{f}-{n}" for f, n, _, _ in FOUND]
)
def test_what_the_fuzzer_found(fmt: str, name: str, text: str, expected: str) -> None:
    tracemalloc.start()
    try:
        result = judge(fmt, "/k/main", MemorySource({"/k/main": text}), {"/k/main"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**20, f"{name}: {peak} bytes"
    if expected:
        assert expected in result.report.render(), result.report.render()
        assert result.report.has_errors


# --- files from the real filesystem ---


def _hostile_files(tmp: Path) -> dict[str, Path]:
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    huge = tmp / "huge"
    with huge.open("wb") as f:
        f.truncate(2**30)  # sparse
    loop = tmp / "loop"
    loop.symlink_to(loop)
    latin = tmp / "latin1.conf"
    latin.write_bytes(b"global_defs {\n router_id caf\xe9\xff\xfe\x00\n}\n\xc3\n")
    return {
        "missing": tmp / "missing",
        "directory": tmp,
        "fifo": fifo,
        "dev-zero": Path("/dev/zero"),
        "huge": huge,
        "symlink-loop": loop,
        "not-utf8": latin,
    }


HOSTILE = ["missing", "directory", "fifo", "dev-zero", "huge", "symlink-loop", "not-utf8"]


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("fmt", ["keepalived", "lvs.cf", "ipvsadm"])
def test_the_imported_file_itself(fmt: str, kind: str, tmp_path: Path) -> None:
    path = _hostile_files(tmp_path)[kind]
    result = judge(fmt, str(path), FileSource())
    if kind != "not-utf8":
        assert result.report.has_errors
        assert result.report.findings[0].origin.line == 0


@pytest.mark.parametrize("kind", HOSTILE)
def test_an_include_of_a_hostile_file(kind: str, tmp_path: Path) -> None:
    target = _hostile_files(tmp_path)[kind]
    main = tmp_path / "keepalived.conf"
    main.write_text(f"global_defs {{\n router_id a\n}}\ninclude {target}\n")
    result = judge("keepalived", str(main), FileSource())
    if kind != "not-utf8":
        assert result.report.has_errors
        assert any(str(f.origin) == f"{main}:4" for f in result.report.findings)


def test_include_loops_and_globs_of_thousands_of_files(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    for n in range(5000):
        (conf / f"{n}.conf").write_text("")
    main = tmp_path / "keepalived.conf"
    main.write_text(
        "include keepalived.conf\ninclude conf.d/*.conf\ninclude conf.d/1*.conf\n"
        "include conf.d/{1,2,3}{0,1,2,3,4,5,6,7,8,9}{0,1,2,3,4,5,6,7,8,9}.conf\n"
    )
    report = judge("keepalived", str(main), FileSource()).report.render()
    assert f"{main}:1: error: include: " in report and "includes itself (a loop)" in report
    assert f"{main}:2: error: include: " in report and "more than 4096 files" in report
    assert f"{main}:3: error" not in report and f"{main}:4: error" not in report


# --- the CLI, as an operator runs it ---


def _cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", "import", *args],
        input=stdin.decode("latin-1"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_cli_ends_in_a_report_and_its_exit_code(tmp_path: Path) -> None:
    files = _hostile_files(tmp_path)
    seq = tmp_path / "seq.conf"
    seq.write_text("~SEQ(i,1,1000000000) real_server 10.0.0.$i 80\n")
    mutated = tmp_path / "mutated.conf"
    mutated.write_bytes(FILES[str(DATA / "keepalived" / "basic-nat.conf")].encode()[:-40] + b"\xff")
    runs = [
        (("keepalived", str(files["fifo"])), b""),
        (("lvs.cf", str(files["dev-zero"])), b""),
        (("ipvsadm", str(files["directory"])), b""),
        (("keepalived", str(seq)), b""),
        (("keepalived", str(mutated)), b""),
        (("ipvsadm", "-"), b"-A -t 192.0.2.1:80 -s rr\n\xff\x00\n"),
        (("ipvsadm", "-"), b"x" * (4 * 2**20 + 10)),
    ]
    for args, stdin in runs:
        done = _cli(*args, stdin=stdin)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert done.returncode == 1, (args, done.returncode, done.stderr)
        last = done.stderr.splitlines()[-1]
        assert last.startswith("lvsmon import: ") and " error" in last, (args, done.stderr)
        assert ": error: " in done.stderr


def test_a_clean_report_means_lvsmon_check_accepts_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out.toml"
    path = DATA / "keepalived" / "basic-nat.conf"
    done = _cli("keepalived", str(path), "-o", str(out), "--config-id", "lb1")
    assert done.returncode == 0 and " 0 errors" in done.stderr, done.stderr
    check = subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", "check", "-c", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    to_a_directory = _cli("keepalived", str(path), "-o", str(tmp_path))
    assert (
        to_a_directory.returncode == 1 and f"{tmp_path}:0: error: --output" in to_a_directory.stderr
    )
