"""Active-active IPVS directors over BGP in the guest: a director dies under long-lived
connections and (mh + sloppy_tcp) every connection keeps working (tests/vm/guest/bgp_fleet.py)."""

from __future__ import annotations

from tests.vm.guest.bgp_fleet import ipvs_fleet, kill_a_director


def test_connections_survive_a_director_loss() -> None:
    with ipvs_fleet() as fleet:
        outcome = kill_a_director(fleet)
    print(f"flows_survived_fraction={outcome.fraction:.4f} ({outcome})")
    assert outcome.on_dead > 0, "no connection went through the director that died"
    assert outcome.survived_on_dead == outcome.on_dead, outcome
    assert outcome.fraction >= 0.99, outcome
