import pytest

from ezthrottle_server.common.errors import ApiError
from ezthrottle_server.common.routing import choose_regions

PREF = ["iad", "lax", "ord"]


def test_no_request_means_this_region():
    assert choose_regions(None, "fallback", "lax", {}, PREF) == ["lax"]


def test_requested_regions_are_kept_while_up():
    assert choose_regions(["ord", "iad"], "fallback", "lax", {"ord": "up", "iad": "degraded"}, PREF) == ["ord", "iad"]


def test_fallback_replaces_down_regions_in_preference_order():
    states = {"iad": "down", "lax": "up", "ord": "up"}
    assert choose_regions(["iad"], "fallback", "iad", states, PREF) == ["lax"]
    assert choose_regions(["iad", "ord"], "fallback", "iad", states, PREF) == ["ord", "lax"]


def test_fallback_with_everything_down_is_503():
    with pytest.raises(ApiError) as exc:
        choose_regions(["iad"], "fallback", "iad", {r: "down" for r in PREF}, PREF)
    assert exc.value.status == 503 and exc.value.code == "region_unavailable"


def test_strict_drops_down_regions_and_never_leaves_the_set():
    states = {"iad": "down", "lax": "up", "ord": "up"}
    assert choose_regions(["iad", "ord"], "strict", "iad", states, PREF) == ["ord"]
    with pytest.raises(ApiError) as exc:
        choose_regions(["iad"], "strict", "lax", states, PREF)
    assert exc.value.status == 503 and "iad" in exc.value.message


def test_unknown_and_unpublished_regions_are_usable():
    assert choose_regions(["ord"], "strict", "iad", {"ord": "unknown"}, PREF) == ["ord"]
