"""The rise/fall state machine, exhaustively and against an independent reference."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.health.state import NEVER, CheckState, inherited, step
from lvsmon.model.health import OK, Reason, Result, fail

BAD = fail(Reason.REFUSED, "connection refused")


def reference(results: list[bool], rise: int, fall: int) -> list[tuple[bool, bool]]:
    """(verdict, transitioned) after each result, stated differently from `step`:
    the first result decides; afterwards the verdict flips when the last `fall`
    (when up) or `rise` (when down) results since the last flip all disagree."""
    out: list[tuple[bool, bool]] = []
    up = True
    run: list[bool] = []
    for i, ok in enumerate(results):
        if i == 0:
            flipped = ok != up
            up = ok
            run = []
        else:
            run.append(ok)
            need = fall if up else rise
            tail = run[-need:]
            flipped = len(tail) == need and all(r != up for r in tail)
            if flipped:
                up, run = not up, []
        out.append((up, flipped))
    return out


def drive(results: list[bool], rise: int, fall: int) -> list[tuple[CheckState, bool]]:
    state, out = CheckState(), []
    for t, ok in enumerate(results):
        state, tr = step(state, OK if ok else BAD, float(t), rise=rise, fall=fall)
        if tr is not None:
            assert tr.up == state.up and tr.at == float(t) and state.since == float(t)
            assert (tr.reason is None) == tr.up
        out.append((state, tr is not None))
    return out


def test_every_sequence_up_to_8_results_matches_the_reference() -> None:
    for rise, fall in itertools.product(range(1, 5), range(1, 5)):
        for n in range(1, 9):
            for seq in itertools.product((True, False), repeat=n):
                got = [(s.up, flipped) for s, flipped in drive(list(seq), rise, fall)]
                assert got == reference(list(seq), rise, fall), (rise, fall, seq)


@settings(max_examples=300)
@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(1, 6), st.integers(1, 6))
def test_long_random_sequences_match_the_reference(seq: list[bool], rise: int, fall: int) -> None:
    got = [(s.up, flipped) for s, flipped in drive(seq, rise, fall)]
    assert got == reference(seq, rise, fall)


@given(st.lists(st.booleans(), min_size=1, max_size=40), st.integers(1, 5), st.integers(1, 5))
def test_transitions_alternate_and_streaks_stay_below_threshold(
    seq: list[bool], rise: int, fall: int
) -> None:
    last = True
    for state, flipped in drive(seq, rise, fall):
        if flipped:
            assert state.up != last
        last = state.up
        assert 0 <= state.streak < (fall if state.up else rise)


def test_fall_failures_take_a_settled_server_down_with_the_reason() -> None:
    state, _ = step(CheckState(), OK, 0.0, rise=2, fall=3)
    for t in (1.0, 2.0):
        state, tr = step(state, BAD, t, rise=2, fall=3)
        assert tr is None and state.up and state.reason is Reason.REFUSED
    state, tr = step(state, fail(Reason.TIMEOUT, "no answer"), 3.0, rise=2, fall=3)
    assert tr is not None and not tr.up and tr.at == 3.0 and tr.reason is Reason.TIMEOUT
    assert tr.why == "3 consecutive failures: timeout (no answer)"
    assert not state.up and state.since == 3.0


def test_first_result_decides_at_once() -> None:
    state, tr = step(CheckState(), BAD, 5.0, rise=3, fall=3)
    assert tr is not None and not state.up and tr.why.startswith("first check failed: refused")
    state, tr = step(CheckState(), OK, 5.0, rise=3, fall=3)
    assert tr is None and state.up and state.settled and state.since == NEVER


def test_a_success_resets_the_failure_streak() -> None:
    state = CheckState(settled=True)
    for ok in (False, False, True, False, False):
        state, tr = step(state, OK if ok else BAD, 0.0, rise=1, fall=3)
        assert tr is None
    assert state.up and state.streak == 2


def test_dynamic_weight_follows_good_results_and_clears_when_down() -> None:
    state, _ = step(CheckState(), Result(True, weight=7), 0.0, rise=1, fall=1)
    assert state.weight == 7
    state, _ = step(state, OK, 1.0, rise=1, fall=1)
    assert state.weight is None
    state, _ = step(state, Result(True, weight=3), 2.0, rise=1, fall=1)
    state, _ = step(state, BAD, 3.0, rise=1, fall=1)
    assert not state.up and state.weight is None


def test_inherited_state_keeps_the_verdict_but_needs_rise_again() -> None:
    down = CheckState(up=False, settled=True, since=1.0, reason=Reason.REFUSED)
    state = inherited(down)
    assert not state.up and state.settled and state.streak == 0
    state, tr = step(state, OK, 2.0, rise=2, fall=2)
    assert tr is None and not state.up  # one success is not enough: rise = 2
    state, tr = step(state, OK, 3.0, rise=2, fall=2)
    assert tr is not None and tr.up and tr.why == "2 consecutive successes"
