from ezthrottle_server.coordinator.health import DEGRADED, DOWN, UP, HealthRules, RegionHealth, assess, step

RULES = HealthRules(silent_after_ms=2500, recover_after_ms=5000, infra_min_domains=3, infra_min_attempts=5)
NOW = 1_000_000


def beat(node, age_ms=0, attempts=0, failures=0, domains=()):
    return {
        "node": node,
        "ts_ms": NOW - age_ms,
        "outcomes": {"attempts": attempts, "infra_failures": failures, "infra_failure_domains": list(domains)},
    }


def test_live_nodes_are_up():
    assert assess([beat("a"), beat("b", 1000)], NOW, RULES)[0] == UP


def test_silent_nodes_make_a_region_down_with_the_silence_in_the_reason():
    state, reason, nodes = assess([beat("a", 2600)], NOW, RULES)
    assert state == DOWN and "2600 ms" in reason and nodes == []
    assert assess([], NOW, RULES)[0] == DOWN


def test_some_silent_nodes_degrade():
    assert assess([beat("a"), beat("b", 9000)], NOW, RULES)[0] == DEGRADED


def test_infra_failures_across_domains_take_a_region_down():
    state, reason, _ = assess([beat("a", attempts=10, failures=8, domains=["x", "y", "z"])], NOW, RULES)
    assert state == DOWN and "3 domains" in reason


def test_one_bad_target_is_not_the_regions_fault():
    assert assess([beat("a", attempts=10, failures=10, domains=["x"])], NOW, RULES)[0] == UP


def test_few_attempts_prove_nothing():
    assert assess([beat("a", attempts=3, failures=3, domains=["x", "y", "z"])], NOW, RULES)[0] == UP


def test_worse_applies_at_once_better_only_after_sustained_health():
    h = RegionHealth(state=UP, reason="", since_ms=0)
    h = step(h, DOWN, "silent", [], NOW, RULES)
    assert h.state == DOWN
    h = step(h, UP, "ok", ["a"], NOW + 1000, RULES)
    assert h.state == DOWN and "recovering" in h.reason
    h = step(h, UP, "ok", ["a"], NOW + 5500, RULES)
    assert h.state == DOWN
    h = step(h, UP, "ok", ["a"], NOW + 6000, RULES)
    assert h.state == UP and h.since_ms == NOW + 6000


def test_a_relapse_restarts_the_recovery_clock():
    h = RegionHealth(state=DOWN, reason="", since_ms=0)
    h = step(h, UP, "ok", ["a"], NOW, RULES)
    h = step(h, DOWN, "silent again", [], NOW + 3000, RULES)
    h = step(h, UP, "ok", ["a"], NOW + 4000, RULES)
    h = step(h, UP, "ok", ["a"], NOW + 8000, RULES)
    assert h.state == DOWN
    h = step(h, UP, "ok", ["a"], NOW + 9001, RULES)
    assert h.state == UP


def test_a_regions_first_nodes_are_believed_at_once():
    h = RegionHealth(state="unknown", reason="never", since_ms=0, seen=False)
    h = step(h, DOWN, "no node", [], NOW, RULES)
    assert h.state == "unknown"
    h = step(h, UP, "ok", ["a"], NOW + 10, RULES)
    assert h.state == UP and h.seen
