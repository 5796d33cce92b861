"""The whole daemon on the nft data plane: `lvsmon run` on the director, real traffic.

- metrics match the client's own counts (connections per real server, bytes,
  active connections from conntrack);
- IPv6 and UDP virtual servers balance;
- persistence keeps a client (its /24) on one real server, and moves it when
  that one is quiesced;
- weight 0 keeps established connections and sends no new ones;
- SIGHUP under traffic (weights changing every reload) loses no connection;
- a killed real server is taken out by its health check, and comes back;
- `lvsmon status` and `lvsmon save` read the nft plane;
- stop deletes the table while established connections keep flowing; with
  flush_on_stop = false a restart adopts the table without writing; a table of
  that name lvsmon did not create stops the start.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.netns.nft_topology import (
    REALS,
    REALS6,
    VIP,
    VIP6,
    NftTopology,
    metrics_value,
    sources,
)
from tests.netns.topology import HERE, PYTHON, Prober, Proc, run, wait_for

WEB, UDP, WEB6, STICKY = 9001, 9002, 9003, 9004
GRACE = 2
NAMES = list(REALS)


@dataclass
class Daemon:
    topo: NftTopology
    proc: Proc | None = None
    weights: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NAMES, 1))
    sticky: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NAMES, 1))
    flush_on_stop: bool = True
    reloads: int = 0

    def config(self) -> str:
        state = self.topo.workdir / "nft-state.json"
        out = [
            f'[daemon]\ndataplane = "nft"\nmetrics_listen = "127.0.0.1:9108"\n'
            f'log_level = "info"\nshutdown_grace = "{GRACE}s"\n'
            f'[daemon.nft]\nstate_file = "{state}"\n'
            f"flush_on_stop = {'true' if self.flush_on_stop else 'false'}",
            f'[[virtual_server]]\nname = "web"\naddress = "{VIP}"\nport = {WEB}\n'
            'scheduler = "wrr"\n[virtual_server.health_check]\ntype = "tcp"\n'
            'interval = "200ms"\ntimeout = "100ms"\nrise = 1\nfall = 2',
        ]
        out += [
            f'[[virtual_server.real_server]]\naddress = "{REALS[n]}"\nweight = {self.weights[n]}'
            for n in NAMES
        ]
        out.append(
            f'[[virtual_server]]\nname = "dns"\naddress = "{VIP}"\nport = {UDP}\n'
            'protocol = "udp"\nscheduler = "rr"'
        )
        out += [f'[[virtual_server.real_server]]\naddress = "{REALS[n]}"' for n in NAMES]
        out.append(
            f'[[virtual_server]]\nname = "web6"\naddress = "{VIP6}"\nport = {WEB6}\n'
            'scheduler = "rr"'
        )
        out += [f'[[virtual_server.real_server]]\naddress = "{REALS6[n]}"' for n in NAMES]
        out.append(
            f'[[virtual_server]]\nname = "sticky"\naddress = "{VIP}"\nport = {STICKY}\n'
            'scheduler = "rr"\npersistence_timeout = "1m"\npersistence_netmask = 24'
        )
        out += [
            f'[[virtual_server.real_server]]\naddress = "{REALS[n]}"\nweight = {self.sticky[n]}'
            for n in NAMES
        ]
        return "\n\n".join(out) + "\n"

    def start(self) -> None:
        self.proc = self.topo.start_lvsmon(self.config())

    def reload(self) -> None:
        assert self.proc is not None
        (self.topo.workdir / "lvsmon.toml").write_text(self.config())
        before = self.metric("lvsmon_config_last_reload_success_timestamp_seconds") or 0.0
        self.proc.popen.send_signal(signal.SIGHUP)
        self.reloads += 1
        wait_for(
            "reload applied",
            lambda: (
                (self.metric("lvsmon_config_last_reload_success_timestamp_seconds") or 0) > before
            ),
            10,
        )

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.popen.send_signal(signal.SIGTERM)
        self.proc.popen.wait(15)

    def metrics(self) -> str:
        return self.topo.http("/metrics")

    def metric(self, name: str, **labels: str) -> float | None:
        return metrics_value(self.metrics(), name, **labels)

    def tables(self) -> list[str]:
        return [t["table"]["name"] for t in self.topo.nft_json("dir", "list", "tables")]


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with NftTopology() as topo:
        topo.start_servers([WEB, UDP, WEB6, STICKY])
        d = Daemon(topo)
        d.start()
        yield d


def per_server(results: list[dict[str, object]]) -> Counter[str]:
    assert all("server" in r for r in results), results
    return Counter(str(r["server"]) for r in results)


def rs_label(name: str, port: int = WEB) -> str:
    return f"{REALS[name]}:{port}"


def test_metrics_match_the_clients_own_counts(daemon: Daemon) -> None:
    text = daemon.metrics()
    before = {
        n: metrics_value(
            text,
            "lvsmon_real_server_connections_total",
            virtual_server="web",
            real_server=rs_label(n),
        )
        or 0.0
        for n in NAMES
    }
    payload = 3000
    results = daemon.topo.connect([{"dst": VIP, "port": WEB, "send": payload}] * 60)
    seen = per_server(results)
    assert seen == Counter(dict.fromkeys(NAMES, 20))  # wrr 1:1:1
    text = daemon.metrics()
    for n in NAMES:
        labels = {"virtual_server": "web", "real_server": rs_label(n)}
        total = metrics_value(text, "lvsmon_real_server_connections_total", **labels)
        assert total == before[n] + seen[n]
        sent = metrics_value(text, "lvsmon_real_server_incoming_bytes_total", **labels) or 0.0
        back = metrics_value(text, "lvsmon_real_server_outgoing_bytes_total", **labels) or 0.0
        # IP bytes: the payload each way plus 40..80 bytes of headers per packet
        assert seen[n] * payload < sent and seen[n] * (payload + 6) < back
    conns = metrics_value(text, "lvsmon_virtual_server_connections_total", virtual_server="web")
    assert conns is not None and conns >= 60
    # active connections are read from conntrack
    holder = daemon.topo.hold(VIP, WEB, 6)
    try:
        text = daemon.metrics()
        active = sum(
            metrics_value(
                text,
                "lvsmon_real_server_connections_active",
                virtual_server="web",
                real_server=rs_label(n),
            )
            or 0.0
            for n in NAMES
        )
        assert active == 6
    finally:
        holder.close()


def test_ipv6_and_udp_balance(daemon: Daemon) -> None:
    six = per_server(daemon.topo.connect([{"dst": VIP6, "port": WEB6}] * 9))
    assert six == Counter(dict.fromkeys(NAMES, 3))
    udp = per_server(daemon.topo.connect([{"dst": VIP, "port": UDP, "proto": "udp"}] * 9))
    assert udp == Counter(dict.fromkeys(NAMES, 3))
    total = daemon.metric(
        "lvsmon_real_server_connections_total",
        virtual_server="dns",
        real_server=rs_label("rs1", UDP),
    )
    assert total is not None and total >= 3


def test_persistence_keeps_a_network_on_one_server_until_it_is_quiesced(daemon: Daemon) -> None:
    jobs = [{"src": s, "dst": VIP, "port": STICKY} for s in sources()[:12]]
    first = per_server(daemon.topo.connect(jobs))
    assert len(first) == 1, first  # every source is in 10.1.0.0/24: one persistence entry
    (pinned,) = first
    daemon.sticky[pinned] = 0
    daemon.reload()
    moved = per_server(daemon.topo.connect(jobs))
    assert len(moved) == 1 and pinned not in moved, moved
    daemon.sticky[pinned] = 1
    daemon.reload()
    again = per_server(daemon.topo.connect(jobs))
    assert again == moved  # the quiesced server's entry was dropped, not revived


def test_weight_zero_keeps_established_connections(daemon: Daemon) -> None:
    holder = daemon.topo.hold(VIP, WEB, 6)
    try:
        assert set(holder.names) == set(NAMES)
        daemon.weights["rs1"] = 0
        daemon.reload()
        fresh = per_server(daemon.topo.connect([{"dst": VIP, "port": WEB}] * 20))
        assert "rs1" not in fresh and sum(fresh.values()) == 20
        assert all(holder.ping())  # including the two on rs1
        status = daemon.topo.status()
        assert status is not None
        (web,) = [vs for vs in status["virtual_servers"] if vs["name"] == "web"]
        rs1 = next(r for r in web["real_servers"] if r["address"] == REALS["rs1"])
        assert rs1["weight"] == 0 and rs1["active"] == 2
    finally:
        holder.close()
        daemon.weights["rs1"] = 1
        daemon.reload()


def test_sighup_under_traffic_loses_no_connection(daemon: Daemon) -> None:
    argv = [PYTHON, str(HERE / "prober.py"), VIP, str(WEB), "0.005", "1.0"]
    prober = Prober(daemon.topo.spawn("client", "prober", argv, stdin=subprocess.PIPE))
    holder = daemon.topo.hold(VIP, WEB, 3)
    try:
        for i in range(6):
            daemon.weights = {n: 1 + (i + k) % 3 for k, n in enumerate(NAMES)}
            daemon.reload()
            assert all(holder.ping())
    finally:
        attempts = prober.stop()
        holder.close()
    assert len(attempts) > 50
    assert [a for a in attempts if not a[1]] == []
    assert daemon.metric("lvsmon_config_last_reload_successful") == 1


def test_a_killed_real_server_is_taken_out_by_its_health_check(daemon: Daemon) -> None:
    topo = daemon.topo
    victim = topo.servers["rs3"]
    topo._kill(victim)
    try:
        wait_for(
            "rs3 down",
            lambda: (
                daemon.metric(
                    "lvsmon_real_server_up", virtual_server="web", real_server=rs_label("rs3")
                )
                == 0
            ),
            10,
        )
        results = topo.connect([{"dst": VIP, "port": WEB}] * 20)
        assert per_server(results).keys() <= {"rs1", "rs2"}
    finally:
        topo.start_servers([WEB, UDP, WEB6, STICKY], hosts=["rs3"])
    wait_for(
        "rs3 back",
        lambda: "rs3" in per_server(topo.connect([{"dst": VIP, "port": WEB}] * 6)),
        10,
        every=0.2,
    )


def test_status_and_save_read_the_nft_plane(daemon: Daemon) -> None:
    path = str(daemon.topo.workdir / "lvsmon.toml")
    cli = [PYTHON, "-m", "lvsmon.cli"]
    status = run(*daemon.topo.exec_argv("dir", [*cli, "status", "-c", path]))
    assert "dataplane=nft" in status and f"TCP  {VIP}:{WEB} wrr" in status
    save = run(*daemon.topo.exec_argv("dir", [*cli, "save", "-c", path]))
    assert f"-A -t {VIP}:{WEB} -s wrr" in save and f"-a -t {VIP}:{WEB} -r {REALS['rs2']}" in save


def test_stop_drains_for_the_grace_period_then_deletes_the_table(daemon: Daemon) -> None:
    holder = daemon.topo.hold(VIP, WEB, 3)
    try:
        assert daemon.proc is not None
        started = time.monotonic()
        daemon.proc.popen.send_signal(signal.SIGTERM)
        wait_for(
            "new connections refused",
            lambda: "error" in daemon.topo.connect([{"dst": VIP, "port": WEB}])[0],
            5,
        )
        assert all(holder.ping())  # established ones keep flowing while lvsmon drains
        daemon.proc.popen.wait(15)
        assert time.monotonic() - started >= GRACE  # they were still established
        assert "lvsmon" not in daemon.tables()
    finally:
        holder.close()


def test_a_restart_adopts_the_table_it_left_without_writing(daemon: Daemon) -> None:
    daemon.flush_on_stop = False
    daemon.weights = dict.fromkeys(NAMES, 1)
    daemon.start()
    generation = owner_generation(daemon)
    daemon.stop()
    assert "lvsmon" in daemon.tables()
    daemon.start()
    assert daemon.proc is not None
    wait_for("adoption logged", lambda: "adopted" in daemon.proc.output(), 10)  # type: ignore[union-attr]
    time.sleep(1.5)  # a sync tick: still nothing to write
    assert owner_generation(daemon) == generation
    assert per_server(daemon.topo.connect([{"dst": VIP, "port": WEB}] * 3)) == Counter(
        dict.fromkeys(NAMES, 1)
    )
    daemon.flush_on_stop = True
    daemon.reload()
    daemon.stop()
    assert "lvsmon" not in daemon.tables()


def test_a_table_lvsmon_did_not_create_stops_the_start(daemon: Daemon) -> None:
    daemon.topo.nft_script("dir", "table inet lvsmon {\n chain c {\n }\n}\n")
    path = daemon.topo.workdir / "lvsmon.toml"
    path.write_text(daemon.config())
    argv = daemon.topo.exec_argv("dir", [PYTHON, "-m", "lvsmon.cli", "run", "-c", str(path)])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert 'daemon.nft.table = "lvsmon": table inet lvsmon exists and lvsmon did not create it' in (
        result.stderr
    )
    assert daemon.topo.nft_json("dir", "list", "table", "inet", "lvsmon")  # left alone


def owner_generation(daemon: Daemon) -> int:
    (owner,) = daemon.topo.nft_json("dir", "list", "map", "inet", "lvsmon", "owner")
    return dict(owner["map"]["elem"])[2]  # type: ignore[no-any-return]
