"""Hostile configs end in a clean error naming the key path: never a traceback, never a
hang, never unbounded memory.

Three sources of input: every structural mutation of every example config (each
value replaced by hostile values of every type, deleted, tables given unknown keys,
entries doubled); Hypothesis documents drawn over the whole schema (the keys the
examples use, at random places, with random TOML values); and files a config names
(web config, keys, certificates, token files, programs, the config itself) that are
missing, directories, FIFOs, devices, enormous or oddly named. A held-back corpus
built the same way from unseen configs checks every landing.
"""

from __future__ import annotations

import copy
import os
import tomllib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsmon import config, configkit
from lvsmon.config import web
from lvsmon.dataplane.base import snapshot_of
from lvsmon.desired import desired_table
from lvsmon.model import Config
from lvsmon.status import build_view, render_table
from tests.fuzz.mutations import deep_nesting, dumps, mutations, nodes, replaced

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config").glob("*.toml"))
DOCS = {p.stem: tomllib.loads(p.read_text()) for p in EXAMPLES}

pytestmark = pytest.mark.timeout(600)


def judge(text: str, source: str = "fuzz.toml") -> Config | config.ConfigError:
    """What `lvsmon check` does with a text: a Config whose table renders, or a
    ConfigError whose every problem names where it is. Anything else propagates."""
    try:
        cfg = config.loads(text, source)
    except config.ConfigError as exc:
        assert exc.problems, "an error without a reason"
        for problem in exc.problems:
            assert problem.path or problem.message.startswith("not valid TOML"), problem
            assert exc.render()
        return exc
    render_table(build_view(cfg, snapshot_of(desired_table(cfg))))
    return cfg


def _all_mutations() -> Iterator[tuple[str, str]]:
    for name, doc in DOCS.items():
        for what, mutated in mutations(doc):
            yield f"{name}: {what}", dumps(mutated)


def test_every_mutation_of_every_example_is_a_clean_error_or_a_valid_config() -> None:
    outcomes = {"valid": 0, "rejected": 0}
    for what, text in _all_mutations():
        try:
            result = judge(text)
        except Exception as exc:  # name the mutation that broke it
            raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
        outcomes["valid" if isinstance(result, Config) else "rejected"] += 1
    # the generator must actually exercise the checker: most mutations are errors
    assert outcomes["rejected"] > 5000 and outcomes["valid"] > 100, outcomes


def test_deep_nesting_is_a_clean_error() -> None:
    for text in deep_nesting():
        result = judge(text)
        assert isinstance(result, config.ConfigError)


# --- Hypothesis over the whole schema ---

KEYS = sorted(
    {str(path[-1]) for doc in DOCS.values() for path, _ in nodes(doc)} - set("0123456789")
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["1s", "100ms", "10.0.0.1", "::1", "10.0.0.1:80", "wlc", "tcp", "mh"])
)
_keys = st.sampled_from(KEYS) | st.text(min_size=1, max_size=12)
values = st.recursive(
    _scalars.filter(lambda v: v is not None),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(DOCS[draw(st.sampled_from(sorted(DOCS)))])
    for _ in range(draw(st.integers(1, 6))):
        places = list(nodes(doc))
        if not places:
            break
        path, _ = draw(st.sampled_from(places))
        if draw(st.booleans()):
            doc = replaced(doc, path, draw(values))
        else:  # a new key, maybe a real one in the wrong place
            parent: Any = doc
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent, dict):
                parent[draw(_keys)] = draw(values)
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_any_document_over_the_schema(doc: dict[str, Any]) -> None:
    judge(dumps(doc))


# --- files a config names ---


def _huge(tmp: Path) -> Path:
    path = tmp / "huge"
    with path.open("wb") as f:
        f.truncate(2**30)  # sparse: 1 GiB that costs nothing to make
    return path


def _fifo(tmp: Path) -> Path:
    path = tmp / "fifo"
    os.mkfifo(path)
    return path


def _loop(tmp: Path) -> Path:
    path = tmp / "loop"
    path.symlink_to(path)
    return path


HOSTILE_FILES = {
    "missing": lambda tmp: tmp / "missing",
    "directory": lambda tmp: tmp,
    "fifo": _fifo,
    "dev-zero": lambda tmp: Path("/dev/zero"),
    "dev-null": lambda tmp: Path("/dev/null"),
    "huge": _huge,
    "symlink-loop": _loop,
}

BASE = """
[daemon]
web_config_file = {web}

[[virtual_server]]
name = "web"
address = "127.0.0.1"
port = 8080
[virtual_server.health_check]
type = "https"
ca_file = {ca}
tls_verify = true
[[virtual_server.real_server]]
address = "127.0.0.2"
[virtual_server.adaptive_weights]
source = "prometheus"
url = "http://127.0.0.1:9090"
query = "node_load1"
authorization_file = {token}

[[virtual_server]]
name = "exec"
address = "127.0.0.1"
port = 8081
[virtual_server.health_check]
type = "exec"
program = {program}
[[virtual_server.real_server]]
address = "127.0.0.3"

[[failover_group]]
name = "edge"
vrid = 7
interface = "eth0"
auth = "hmac-sha256"
auth_key_file = {key}
[[failover_group.address]]
address = "192.0.2.1/24"
"""
# (the key whose file is hostile, where its error is reported)
FILE_KEYS = {
    "web": "daemon.web_config_file",
    "ca": "virtual_server[web].health_check.ca_file",
    "token": "virtual_server[web].adaptive_weights.authorization_file",
    "program": "virtual_server[exec].health_check.program",
    "key": "failover_group[edge].auth_key_file",
}


def _toml_string(path: Path | str) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize("kind", sorted(HOSTILE_FILES))
@pytest.mark.parametrize("key", sorted(FILE_KEYS))
def test_a_hostile_referenced_file_is_a_clean_error(kind: str, key: str, tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "token").write_text("Bearer abc\n")
    (good / "key").write_text("k" * 32)
    (good / "web.yml").write_text("{}\n")
    (good / "ca").write_text("not a certificate\n")  # tls_verify: only read when reachable
    files = {k: _toml_string(good / k) for k in FILE_KEYS}
    files["program"] = '"/bin/true"'
    files["ca"] = '""'
    hostile = HOSTILE_FILES[kind](tmp_path)
    files[key] = _toml_string(hostile)
    tracemalloc.start()
    try:
        result = judge(BASE.format(**files))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, config.ConfigError), f"{kind} accepted at {FILE_KEYS[key]}"
    paths = [p.path for p in result.problems]
    assert any(p == FILE_KEYS[key] for p in paths), (FILE_KEYS[key], result.render())
    assert peak < 32 * 2**20, f"reading a {kind} file took {peak} bytes"


@pytest.mark.parametrize("name", ["with\x00nul", "", " ", "\n"])
def test_odd_file_names_are_clean_errors(name: str) -> None:
    text = BASE.format(
        web=_toml_string(name), ca='""', token='"/x"', program='"/bin/true"', key='"/x"'
    )
    result = judge(text)
    assert isinstance(result, config.ConfigError)


@pytest.mark.parametrize("kind", sorted(HOSTILE_FILES))
def test_the_config_file_itself(kind: str, tmp_path: Path) -> None:
    path = HOSTILE_FILES[kind](tmp_path)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert info.value.problems[0].message.startswith(("cannot read", "not valid TOML"))


def test_read_file_reads_at_most_the_cap(tmp_path: Path) -> None:
    huge = _huge(tmp_path)
    with pytest.raises(configkit.FileProblem, match="larger than 100 bytes"):
        configkit.read_file(str(huge), 100)
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    assert configkit.read_file(str(small), 100) == b"x" * 100


# --- the web config (YAML) and the PEM files it names ---


def test_every_mutation_of_the_example_web_config(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "lvsmon.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "lvsmon.key"))
    doc = yaml.safe_load((ROOT / "config" / "web.yml").read_text())
    target = tmp_path / "web.yml"
    cases = 0
    for what, mutated in mutations(doc):
        target.write_text(yaml.safe_dump(mutated))
        try:
            web.load(str(target))
        except web.WebConfigError as exc:
            assert exc.problems and all(m for _, m in exc.problems), what
        except Exception as exc:
            raise AssertionError(f"web.yml {what}: {type(exc).__name__}: {exc}") from exc
        cases += 1
    assert cases > 200
    for text in ("[" * 100_000 + "]" * 100_000, "a: &a [*a, *a]\n", ": : :", "\x00"):
        target.write_text(text)
        with pytest.raises(web.WebConfigError):
            web.load(str(target))
