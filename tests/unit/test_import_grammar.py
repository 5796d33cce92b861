"""keepalived's grammar as the importer reads it (keepalived.conf(5)), the ipvsadm rule
parser and the lvs.cf reader, on configs held in memory."""

from __future__ import annotations

from lvsmon import config
from lvsmon.importers import translate
from lvsmon.importers.kaparse import Node, Parser, parse, tokenize
from lvsmon.importers.report import Report, Severity
from lvsmon.importers.source import MemorySource


def tree(
    files: dict[str, str], config_id: str = "", main: str = "/k/main.conf"
) -> tuple[Node, Report]:
    report = Report()
    root = parse(Parser(MemorySource(files), report, config_id), main)
    return root, report


def flat(node: Node, depth: int = 0) -> list[str]:
    out = []
    for c in node.children or []:
        out.append("  " * depth + c.text() + (" {" if c.children is not None else ""))
        out.extend(flat(c, depth + 1))
    return out


def test_tokens_quotes_escapes_and_braces() -> None:
    assert tokenize("misc_path \"/bin/check -a 'x y'\" user") == [
        "misc_path",
        "/bin/check -a 'x y'",
        "user",
    ]
    assert tokenize('abcd" efg h jkl "mnop') == ["abcd efg h jkl mnop"]  # the man page's example
    assert tokenize('a "b\\tc\\x41\\101\\"" d') == ["a", 'b\tcAA"', "d"]
    assert tokenize("virtual_ipaddress {10.0.0.1}") == ["virtual_ipaddress", "{", "10.0.0.1", "}"]


def test_comments_blocks_on_the_next_line_and_one_line_blocks() -> None:
    root, report = tree(
        {
            "/k/main.conf": "! header\n"
            "vrrp_instance VI_1   # the only one\n"
            "{\n"
            "  interface eth0 ! the public side\n"
            '  notify_master "/bin/echo #not a comment"\n'
            "  virtual_ipaddress { 192.0.2.1/24 }\n"
            "}\n"
        }
    )
    assert flat(root) == [
        "vrrp_instance VI_1 {",
        "  interface eth0",
        "  notify_master /bin/echo #not a comment",
        "  virtual_ipaddress {",
        "    192.0.2.1/24",
    ]
    assert report.findings == []
    assert [c.origin.line for c in root.children or []] == [2]


def test_unbalanced_braces_are_errors_with_their_line() -> None:
    _, report = tree(
        {"/k/main.conf": "global_defs {\n router_id x\n\nvirtual_server 1.2.3.4 80 {\n"}
    )
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    assert [(f.origin.line, f.directive) for f in errors] == [
        (1, "global_defs"),
        (4, "virtual_server"),
    ]
    _, report = tree({"/k/main.conf": "}\n"})
    assert [(f.origin.line, f.directive) for f in report.findings] == [(1, "}")]


def test_include_globs_braces_and_nesting_are_relative_to_the_including_file() -> None:
    files = {
        "/k/main.conf": "include conf.d/*.conf\ninclude other/{a,b}.inc\ninclude missing/*.conf\n",
        "/k/conf.d/1.conf": "virtual_server 192.0.2.1 80 {\n include ../rs/*.rs\n}\n",
        "/k/conf.d/2.conf": "virtual_server 192.0.2.2 80 {\n}\n",
        "/k/rs/x.rs": "real_server 198.51.100.1 80 {\n weight 2\n}\n",
        "/k/other/a.inc": "global_defs {\n}\n",
        "/k/other/b.inc": "vrrp_script s {\n}\n",
    }
    root, report = tree(files)
    assert flat(root) == [
        "virtual_server 192.0.2.1 80 {",
        "  real_server 198.51.100.1 80 {",
        "    weight 2",
        "virtual_server 192.0.2.2 80 {",
        "global_defs {",
        "vrrp_script s {",
    ]
    weight = (root.children or [])[0].children[0].children[0]  # type: ignore[index]
    assert (weight.origin.file, weight.origin.line) == ("/k/rs/x.rs", 2)
    (missing,) = report.findings
    assert missing.severity is Severity.WARNING and missing.origin.line == 3


def test_include_loops_stop_with_an_error() -> None:
    _, report = tree({"/k/main.conf": "include main.conf\n"})
    assert report.has_errors


def test_conditionals_by_config_id() -> None:
    text = "@main router_id a\n@backup router_id b\n@^main priority 1\n@^backup priority 2\n"
    for cid, want in (
        ("main", ["router_id a", "priority 2"]),
        ("backup", ["router_id b", "priority 1"]),
        ("", ["priority 1", "priority 2"]),
    ):
        root, report = tree({"/k/main.conf": text}, cid)
        assert flat(root) == want, cid
        assert all(f.severity is Severity.NOTE for f in report.findings)


def test_parameters_recursive_at_use_and_undefined_left_alone() -> None:
    text = (
        "$ADDRESS_BASE=10.2.${ADDRESS_BASE_SUB}\n"
        "$ADDRESS_BASE_SUB=0\n"
        "${ADDRESS_BASE}.100/32\n"
        "$ADDRESS_BASE_SUB=10\n"
        "${ADDRESS_BASE}.100/32\n"
        "x ${UNDEFINED} $PLAIN y\n"
        "$PLAIN=p\n"
        "x $PLAIN ${_HASH}${_BANG} ${_PWD}\n"
    )
    root, _ = tree({"/k/main.conf": text}, "main")
    assert flat(root) == [
        "10.2.0.100/32",
        "10.2.10.100/32",
        "x ${UNDEFINED} $PLAIN y",
        "x p #! /k",
    ]


def test_multiline_definitions_with_definitions_and_conditionals_inside() -> None:
    text = (
        "$RS= \\\n"
        "real_server 192.168.${VS_NUM}.${RS_NUM} 80 { \\\n"
        "    @high weight 3 \\\n"
        "    @^high weight 1 \\\n"
        "}\n"
        "$VS= \\\n"
        "virtual_server 10.0.${VS_NUM}.4 80 { \\\n"
        "    $RS_NUM=1 \\\n"
        "    $RS \\\n"
        "    $RS_NUM=2 \\\n"
        "    $RS \\\n"
        "}\n"
        "$VS_NUM=0\n"
        "$VS\n"
    )
    root, _ = tree({"/k/main.conf": text}, "high")
    assert flat(root) == [
        "virtual_server 10.0.0.4 80 {",
        "  real_server 192.168.0.1 80 {",
        "    weight 3",
        "  real_server 192.168.0.2 80 {",
        "    weight 3",
    ]


def test_seq_and_lst_blocks() -> None:
    text = (
        "~SEQ(SUBNET, 0, 3) ip_address 10.0.${SUBNET}.1\n"
        "~SEQx(S, 0x90, 0x10, 0xa0) fe80::${S}\n"
        "~LST({IP, IP1}, {10,1},{20,4}) 192.168.${IP}.${IP1}\n"
        "~LST(A, 1, 2) ~SEQ(B, 2) n${A}.${B}\n"
    )
    root, _ = tree({"/k/main.conf": text})
    assert flat(root) == [
        "ip_address 10.0.0.1",
        "ip_address 10.0.1.1",
        "ip_address 10.0.2.1",
        "ip_address 10.0.3.1",
        "fe80::90",
        "fe80::a0",
        "192.168.10.1",
        "192.168.20.4",
        "n1.1",
        "n1.2",
        "n2.1",
        "n2.2",
    ]


KEEPALIVED = """
global_defs { vrrp_version 3 }
vrrp_instance V { interface eth0
  virtual_router_id 7
  virtual_ipaddress {
    192.0.2.9/24 dev eth0 label eth0:1
  }
  track_interface {
    eth1 weight -30
  }
}
virtual_server 192.0.2.9 80 {
  lb_algo wrr
  real_server 10.0.0.1 8080 {
    weight 4
    HTTP_GET { url { path /a } url { path /b } }
    TCP_CHECK { }
  }
  real_server 10.0.0.2 8080 {
    weight 1
  }
}
"""


def test_keepalived_translation_reports_what_it_drops_with_file_and_line() -> None:
    result = translate("keepalived", "/k/main.conf", MemorySource({"/k/main.conf": KEEPALIVED}))
    cfg = config.loads(result.toml)
    (vs,) = cfg.virtual_servers
    assert [(rs.label, rs.weight, str(rs.forwarding)) for rs in vs.real_servers] == [
        ("10.0.0.1:8080", 4, "nat"),
        ("10.0.0.2:8080", 1, "nat"),
    ]
    check = vs.real_servers[0].health_check
    assert check is not None and check.type.value == "http"
    assert vs.real_servers[1].health_check is None  # no checker: always in service
    (group,) = cfg.failover_groups
    assert group.priority == 100 and group.track_interfaces[0].weight == -30
    found = {(f.origin.line, f.directive) for f in result.report.findings}
    assert (16, "url") in found  # the second url block
    assert (17, "TCP_CHECK") in found  # a second checker
    assert (6, "vrrp_instance") not in found  # vrrp_version 3: no VRRPv2 warning


IPVSADM = """\
-A -t 192.0.2.10:80 -s wlc -p 300 -M 255.255.255.0
-a -t 192.0.2.10:80 -r 10.0.0.3:8080 -m -w 1
-a -t 192.0.2.10:80 -r 10.0.0.2:8080 -m -w 3 -x 1000 -y 800
-A -u 192.0.2.10:53 -s sh -b flag-2
-a -u 192.0.2.10:53 -r 10.0.0.3:53 -g -w 1
-A -f 25 -s rr
-a -f 25 -r 10.0.0.2:0 -i -w 1
-A --sctp-service [2001:db8::10]:443 -s mh -b mh-fallback,mh-port
-a --sctp-service [2001:db8::10]:443 -r [2001:db8::2]:8443 -m -w 0
"""


def test_ipvsadm_rules_become_the_same_table_in_adding_order() -> None:
    result = translate("ipvsadm", "rules", MemorySource({"rules": IPVSADM}))
    assert result.report.findings == []
    cfg = config.loads(result.toml)
    got = {
        str(vs.key): (
            vs.scheduler,
            sorted(vs.scheduler_flags),
            vs.persistence_timeout,
            [
                (rs.label, rs.weight, str(rs.forwarding), rs.upper_threshold)
                for rs in vs.real_servers
            ],
        )
        for vs in cfg.virtual_servers
    }
    assert got == {
        # ipvsadm -S lists newest first; the config adds oldest first
        "TCP 192.0.2.10:80": (
            "wlc",
            [],
            300.0,
            [("10.0.0.2:8080", 3, "nat", 1000), ("10.0.0.3:8080", 1, "nat", 0)],
        ),
        "UDP 192.0.2.10:53": ("sh", ["sh-port"], 0.0, [("10.0.0.3:53", 1, "dr", 0)]),
        "FWM 25": ("rr", [], 0.0, [("10.0.0.2:0", 1, "tunnel", 0)]),
        "SCTP [2001:db8::10]:443": (
            "mh",
            ["mh-fallback", "mh-port"],
            0.0,
            [("[2001:db8::2]:8443", 0, "nat", 0)],
        ),
    }


def test_ipvsadm_what_cannot_be_translated() -> None:
    rules = "-A -t example.org:http -s rr\n-A -t 192.0.2.1:0 -s rr -p\n-A -t 192.0.2.2:80 -s xyz\n"
    result = translate("ipvsadm", "r", MemorySource({"r": rules}))
    errors = [(f.origin.line, f.severity) for f in result.report.findings]
    assert errors == [(1, Severity.ERROR), (2, Severity.ERROR), (3, Severity.ERROR)]


def test_lvs_cf_syntax_errors_name_their_line() -> None:
    text = "service = lvs\nvirtual web {\n  address = 192.0.2.1 eth0\n  port = 80\n  nonsense\n"
    result = translate("lvs.cf", "lvs.cf", MemorySource({"lvs.cf": text}))
    lines = {(f.origin.line, f.severity) for f in result.report.findings}
    assert (5, Severity.ERROR) in lines
    assert result.report.has_errors
