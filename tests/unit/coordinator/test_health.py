from ezthrottle_server.coordinator.health import DEGRADED, DOWN, UP, HealthRules, RegionHealth, assess, step

RULES = HealthRules(silent_after_ms=2500, recover_after_ms=5000, infra_min_domains=3, infra_min_attempts=5, probe_fail_after=2)
NOW = 1_000_000
LAX, ORD = "http://127.0.0.1:8702", "http://127.0.0.1:8703"


def beat(node, age_ms=0, domains=None, probes=None, url=None):
    b = {
        "node": node,
        "ts_ms": NOW - age_ms,
        "outcomes": {"domains": {d: list(v) for d, v in (domains or {}).items()}},
        "probes": probes or {},
    }
    if url:
        b["url"] = url
    return b


def ok(peer=None, at=NOW - 100):
    p = {"ok": True, "checked_ms": at, "ok_ms": at, "failing_since_ms": 0, "failures": 0}
    return {**p, "peer": peer} if peer else p


def failing(since=NOW - 900, failures=2, peer=None):
    p = {"ok": False, "checked_ms": NOW - 50, "ok_ms": since - 500, "failing_since_ms": since, "failures": failures, "error": "refused"}
    return {**p, "peer": peer} if peer else p


def three_regions(iad_probes, lax_probes=None, ord_probes=None):
    """iad's beat, and lax's and ord's (live edges that probe each other and iad)."""
    others = {
        "lax": [beat("l", url=LAX, probes=lax_probes or {f"{ORD}/healthz": ok("ord"), "http://127.0.0.1:8701/healthz": ok("iad")})],
        "ord": [beat("o", url=ORD, probes=ord_probes or {f"{LAX}/healthz": ok("lax"), "http://127.0.0.1:8701/healthz": ok("iad")})],
    }
    return [beat("i", url="http://127.0.0.1:8701", probes=iad_probes)], others


def test_live_nodes_are_up():
    assert assess([beat("a"), beat("b", 1000)], NOW, RULES).state == UP


def test_silent_nodes_make_a_region_down_with_the_silence_in_the_reason():
    state, reason, nodes, was_failure = assess([beat("a", 2600)], NOW, RULES)
    assert state == DOWN and "2600 ms" in reason and nodes == [] and was_failure


def test_a_region_whose_nodes_all_stopped_cleanly_is_down_but_not_failing():
    observed = assess([], NOW, RULES)
    assert observed.state == DOWN and not observed.failing


def test_some_silent_nodes_degrade():
    assert assess([beat("a"), beat("b", 9000)], NOW, RULES).state == DEGRADED


def test_probes_failing_from_here_while_up_elsewhere_take_a_region_down():
    iad, others = three_regions({f"{LAX}/healthz": failing(peer="lax"), f"{ORD}/healthz": failing(peer="ord")})
    observed = assess(iad, NOW, RULES, others)
    assert observed.state == DOWN and observed.failing and "2 of 2 health targets" in observed.reason


def test_one_failed_probe_in_a_row_proves_nothing():
    iad, others = three_regions({f"{LAX}/healthz": failing(failures=1, peer="lax"), f"{ORD}/healthz": failing(failures=1, peer="ord")})
    assert assess(iad, NOW, RULES, others).state == UP


def test_one_target_of_two_failing_degrades():
    iad, others = three_regions({f"{LAX}/healthz": failing(peer="lax"), f"{ORD}/healthz": ok("ord")})
    assert assess(iad, NOW, RULES, others).state == DEGRADED


def test_a_target_failing_from_every_region_is_the_targets_problem():
    # ord's edge is gone: iad and lax both fail it; iad still reaches lax
    iad, others = three_regions(
        {f"{LAX}/healthz": ok("lax"), f"{ORD}/healthz": failing(peer="ord")},
        lax_probes={f"{ORD}/healthz": failing(peer="ord"), "http://127.0.0.1:8701/healthz": ok("iad")},
    )
    assert assess(iad, NOW, RULES, others).state == UP


def test_a_peer_that_stopped_beating_before_the_failures_began_is_not_the_paths_fault():
    # two regions: lax was killed (its last beat before iad's probes failed)
    iad = [beat("i", url="http://127.0.0.1:8701", probes={f"{LAX}/healthz": failing(since=NOW - 600, peer="lax")})]
    others = {"lax": [beat("l", age_ms=1000, url=LAX)]}
    assert assess(iad, NOW, RULES, others).state == UP
    # lax beats on while iad cannot reach it: iad's path fails
    others = {"lax": [beat("l", age_ms=100, url=LAX)]}
    assert assess(iad, NOW, RULES, others).state == DOWN


def test_an_operators_target_only_this_region_probes_counts_on_its_own():
    iad = [beat("i", probes={"https://health.example/ping": failing()})]
    assert assess(iad, NOW, RULES, {"lax": [beat("l")]}).state == DOWN


def test_blocked_and_stale_probes_count_for_nothing():
    iad = [
        beat(
            "i",
            probes={"https://a.example/": {**failing(), "blocked": True}, "https://b.example/": {**failing(), "checked_ms": NOW - 9000}},
        )
    ]
    assert assess(iad, NOW, RULES).state == UP


def test_customer_domains_failing_only_from_here_say_nothing():
    dead = {f"127.0.0.1:{p}": (40, 40) for p in range(1000, 1024)}
    assert assess([beat("a", domains=dead)], NOW, RULES, {"lax": [beat("l")]}).state == UP
    # rerouted, they fail from the other regions too
    assert assess([beat("a", domains=dead)], NOW, RULES, {"lax": [beat("l", domains=dead)]}).state == UP


def test_customer_domains_failing_here_but_reached_elsewhere_degrade_never_down():
    mixed = {"x:1": (10, 9), "y:1": (10, 10), "z:1": (10, 8)}
    reached = {"x:1": (10, 0), "y:1": (10, 1), "z:1": (6, 0)}
    observed = assess([beat("a", domains=mixed)], NOW, RULES, {"lax": [beat("l", domains=reached)]})
    assert observed.state == DEGRADED and "3 domains" in observed.reason
    two = {"x:1": (10, 9), "y:1": (10, 10)}
    assert assess([beat("a", domains=two)], NOW, RULES, {"lax": [beat("l", domains=reached)]}).state == UP


def test_few_attempts_prove_nothing():
    few = {"x:1": (3, 3), "y:1": (3, 3), "z:1": (3, 3)}
    reached = {"x:1": (10, 0), "y:1": (10, 0), "z:1": (10, 0)}
    assert assess([beat("a", domains=few)], NOW, RULES, {"lax": [beat("l", domains=reached)]}).state == UP


def test_worse_applies_at_once_better_only_after_sustained_health():
    h = RegionHealth(state=UP, reason="", since_ms=0)
    h = step(h, DOWN, "silent", [], NOW, RULES)
    assert h.state == DOWN and h.failing
    h = step(h, UP, "ok", ["a"], NOW + 1000, RULES)
    assert h.state == DOWN and "recovering" in h.reason
    h = step(h, UP, "ok", ["a"], NOW + 5500, RULES)
    assert h.state == DOWN
    h = step(h, UP, "ok", ["a"], NOW + 6000, RULES)
    assert h.state == UP and h.since_ms == NOW + 6000 and not h.failing


def test_a_relapse_restarts_the_recovery_clock():
    h = RegionHealth(state=DOWN, reason="", since_ms=0, failing=True)
    h = step(h, UP, "ok", ["a"], NOW, RULES)
    h = step(h, DOWN, "silent again", [], NOW + 3000, RULES)
    h = step(h, UP, "ok", ["a"], NOW + 4000, RULES)
    h = step(h, UP, "ok", ["a"], NOW + 8000, RULES)
    assert h.state == DOWN
    h = step(h, UP, "ok", ["a"], NOW + 9001, RULES)
    assert h.state == UP


def test_a_region_never_seen_failing_comes_back_at_once():
    # its nodes all stopped cleanly (a restart), or the published state predates the flag
    h = RegionHealth(state=UP, reason="", since_ms=0)
    h = step(h, DOWN, "no live node (every node stopped)", [], NOW, RULES, failing=False)
    assert h.state == DOWN and not h.failing
    h = step(h, UP, "ok", ["a"], NOW + 10, RULES)
    assert h.state == UP and h.since_ms == NOW + 10
    h = RegionHealth(state=DOWN, reason="from an older coordinator", since_ms=0)
    assert step(h, UP, "ok", ["a"], NOW, RULES).state == UP


def test_a_regions_first_nodes_are_believed_at_once():
    h = RegionHealth(state="unknown", reason="never", since_ms=0, seen=False)
    h = step(h, DOWN, "no node", [], NOW, RULES)
    assert h.state == "unknown"
    h = step(h, UP, "ok", ["a"], NOW + 10, RULES)
    assert h.state == UP and h.seen
