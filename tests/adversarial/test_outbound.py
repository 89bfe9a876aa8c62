"""Issue 14, outbound: what the dam sends on a customer's behalf under hostile input.

- Credentials do not follow a redirect to another origin (scheme, host or
  port differs): ``Authorization``, ``Cookie``, ``Proxy-Authorization`` and
  the headers listed in ``redirect_sensitive_headers`` are dropped there, and
  stay dropped for later hops. Same-origin redirects keep them.
- A refusal a customer reads (the job's attempt error, a webhook's last error,
  a dead letter) names the host and the kind of address, never the address a
  name resolved to.
- The production profile sends to ports 80 and 443 only, plus the ports in
  ``outbound_allowed_ports``.

Everything runs on loopback: two origins are two loopback ports; names are
answered by a StaticResolver inside the edge or delivery worker, never DNS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
import pytest_asyncio
from aiohttp import web
from yarl import URL

from ezthrottle_server.common.config import ConfigError, Settings, load_settings
from ezthrottle_server.common.errors import OutboundBlocked
from ezthrottle_server.common.outbound import OutboundPolicy
from integration.delivery.helpers import FAST, all_in, wait_webhooks
from integration.outbound.helpers import post_job, use_resolver
from support.jobs import auth, submit, wait_final
from support.redis_server import free_port
from support.services import REGIONS_FILE, StartApp, app_starter
from support.targets import Target, serving
from unit.outbound.netguard import EgressGuard, StaticResolver, guarding_egress

pytestmark = pytest.mark.asyncio

CREDENTIALS = {
    "Authorization": "Bearer customer-token",
    "Cookie": "session=customer-cookie",
    "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
}
CONFIGURED = {"X-Api-Key": "customer-api-key"}  # sensitive by configuration (redirect_sensitive_headers)
PLAIN = {"X-Trace": "keep-me"}


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def present(headers: dict[str, str], wanted: dict[str, str]) -> list[str]:
    got = lower(headers)
    return [h for h in wanted if h.lower() in got]


@pytest_asyncio.fixture
async def other() -> AsyncIterator[Target]:
    """A second target: another origin (another loopback port) than ``target``."""
    async with serving(Target()) as server:
        yield server


@pytest_asyncio.fixture
async def egress_guard() -> AsyncIterator[EgressGuard]:
    async with guarding_egress() as guard:
        yield guard


@pytest_asyncio.fixture
async def start_delivery(redis, redis_url: str) -> AsyncIterator[StartApp]:
    from ezthrottle_server.delivery.app import create_app

    def create(settings: Settings) -> web.Application:
        return create_app(settings, stop_grace_s=1.0)

    async with app_starter("delivery", redis_url, create, **FAST) as start:
        yield start


# -- 1. credentials and redirects --------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_origin_drops_credentials(code, http, edge, api_key, target, other):
    """A same-origin hop first (credentials kept), then a hop to another origin (dropped)."""
    onward = quote(f"/redirect?to={quote(f'{other.url}/echo', safe='')}&code={code}", safe="")
    url = f"{target.url}/redirect?to={onward}&code=307"
    job = await submit(http, edge.url, api_key, {"url": url, "headers": {**CREDENTIALS, **PLAIN}})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success", view
    first, same = target.matching("/redirect")
    assert present(first.headers, CREDENTIALS) == present(same.headers, CREDENTIALS) == list(CREDENTIALS)
    assert same.query["to"] == f"{other.url}/echo"
    [there] = other.matching("/echo")
    assert present(there.headers, CREDENTIALS) == []
    assert lower(there.headers)["x-trace"] == "keep-me"


async def test_headers_configured_as_sensitive_are_dropped_too(http, start_edge, api_key, target, other):
    edge = await start_edge("iad", redirect_sensitive_headers=("x-api-key",))
    headers = {**CREDENTIALS, **CONFIGURED, **PLAIN}
    for url in (f"{target.url}/redirect?to=/echo&code=307", f"{target.url}/redirect?to={other.url}/echo&code=307"):
        view = await wait_final(
            http, edge.url, api_key, (await submit(http, edge.url, api_key, {"url": url, "headers": headers}))["job_id"]
        )
        assert view["status"] == "success", view
    [same] = target.matching("/echo")
    assert present(same.headers, headers) == list(headers)
    [there] = other.matching("/echo")
    assert present(there.headers, headers) == list(PLAIN)


async def test_credentials_dropped_on_a_hop_stay_dropped_back_on_the_first_origin(http, edge, api_key, target, other):
    back = f"{other.url}/redirect?to={target.url}/echo%26code=307"  # other -> target again
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/redirect?to={back}&code=307", "headers": CREDENTIALS})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success", view
    assert [r.path for r in target.requests] == ["/redirect", "/echo"] and len(other.requests) == 1
    assert present(other.requests[0].headers, CREDENTIALS) == []
    assert present(target.matching("/echo")[0].headers, CREDENTIALS) == []


async def test_another_scheme_or_host_on_the_same_port_is_another_origin(edge, target, other):
    """``https://`` (or ``localhost`` for ``127.0.0.1``) on the same port is another origin."""
    from ezthrottle_server.edge.executor import redirect_headers

    here = f"http://127.0.0.1:{target.port}"
    sensitive = frozenset({"x-api-key"})
    headers = {**CREDENTIALS, **CONFIGURED}
    assert redirect_headers(headers, URL(f"{here}/a"), URL(f"{here}/b"), sensitive) == headers
    assert redirect_headers(headers, URL(f"{here}/a"), URL(f"HTTP://127.0.0.1:{target.port}/c"), sensitive) == headers
    for there in (f"https://127.0.0.1:{target.port}/b", f"http://localhost:{target.port}/b", f"{other.url}/b"):
        assert redirect_headers({**headers, **PLAIN}, URL(f"{here}/a"), URL(there), sensitive) == PLAIN, there


@pytest.mark.parametrize(
    ("code", "method", "body"),
    [(301, "GET", ""), (302, "GET", ""), (303, "GET", ""), (307, "POST", "payload"), (308, "POST", "payload")],
)
async def test_a_post_redirected_to_another_origin_keeps_its_method_rules(code, method, body, http, edge, api_key, target, other):
    """301/302/303 turn a POST into a GET without a body (as browsers do); 307/308 keep both."""
    url = f"{target.url}/redirect?to={other.url}/echo&code={code}"
    job = await submit(http, edge.url, api_key, {"url": url, "method": "POST", "body": "payload", "headers": CREDENTIALS})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["status"] == "success", view
    [there] = other.matching("/echo")
    assert (there.method, there.body.decode()) == (method, body)
    assert present(there.headers, CREDENTIALS) == []


async def test_redirect_sensitive_headers_come_from_the_environment():
    env = {"EZT_REGIONS_FILE": str(REGIONS_FILE), "EZT_REGION": "iad", "EZT_REDIRECT_SENSITIVE_HEADERS": "X-Api-Key, x-signature"}
    assert load_settings("edge", env=env).redirect_sensitive_headers == ("x-api-key", "x-signature")
    with pytest.raises(ConfigError, match="EZT_REDIRECT_SENSITIVE_HEADERS"):
        load_settings("edge", env={**env, "EZT_REDIRECT_SENSITIVE_HEADERS": "x-ok, bad header:"})


# -- 2. refusals name no resolved address -------------------------------------------

NAMES = {"loop.test": ["127.0.0.1"], "private.test": ["10.0.0.9"], "imds.test": ["169.254.169.254"], "hop.test": ["127.0.0.2"]}


@pytest.mark.parametrize(
    ("name", "address", "kind"),
    [
        ("loop.test", "127.0.0.1", "loopback"),
        ("private.test", "10.0.0.9", "private"),
        ("imds.test", "169.254.169.254", "metadata"),
    ],
)
async def test_a_refused_name_names_no_address_in_the_job(name, address, kind, http, start_edge, api_key, egress_guard, caplog):
    edge = await start_edge("iad", profile="production")
    await use_resolver(edge, NAMES)
    status, body = await post_job(http, edge, api_key, {"url": f"http://{name}/path"})
    assert status == 201, body
    view = await wait_final(http, edge.url, api_key, body["job_id"])
    assert view["status"] == "failed" and view["error"] == "outbound_blocked", view
    [attempt] = view["attempts"]
    assert address not in str(view)
    assert name in attempt["error"] and kind in attempt["error"], attempt
    assert any(address in r.getMessage() for r in caplog.records), "operators get the address in the logs"
    assert egress_guard.connects_to_port(80) == []


async def test_a_refused_redirect_hop_names_no_address(http, start_edge, api_key, target, egress_guard):
    """A loopback-refusing edge that may reach 127.0.0.1 only: a hop to a name on 127.0.0.2 is refused."""
    edge = await start_edge("iad", outbound_allow_loopback=False, outbound_allow_cidrs=("127.0.0.1/32",))
    await use_resolver(edge, NAMES)
    view = await wait_final(
        http,
        edge.url,
        api_key,
        (await submit(http, edge.url, api_key, {"url": f"{target.url}/redirect?to=http://hop.test:{target.port}/echo"}))["job_id"],
    )
    assert view["error"] == "outbound_blocked", view
    assert "127.0.0.2" not in str(view) and "hop.test" in view["attempts"][0]["error"]
    assert target.matching("/echo") == []


async def test_a_refused_webhook_names_no_address_in_its_dead_letter(http, start_edge, start_delivery, api_key, target, receiver):
    """The delivery service's dead letter. The edge leaves every webhook to it: an edge that sent the first POST itself
    (with the system's resolver, to which ``hook.test`` is no name) would leave the verdict to a retry ~10 s later."""
    from ezthrottle_server.delivery.app import CTX

    edge = await start_edge("iad", edge_delivers_webhooks=False)
    worker = await start_delivery(outbound_allow_loopback=False)
    sender = worker.app[CTX].worker.sender
    await sender.close()
    sender.resolver = StaticResolver({"hook.test": ["127.0.0.1"]})
    await sender.start()
    job = await submit(
        http, edge.url, api_key, {"url": f"{target.url}/status/200", "webhooks": [{"url": f"http://hook.test:{receiver.port}/in"}]}
    )
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("dead"))
    [endpoint] = view["webhooks"]["endpoints"]
    assert endpoint["dead_reason"] == "outbound_blocked" and "loopback" in endpoint["last_error"], endpoint
    assert "127.0.0.1" not in endpoint["last_error"]
    async with http.get(f"{edge.url}/api/v1/deliveries/dead", headers=auth(api_key)) as resp:
        dead = await resp.text()
    assert resp.status == 200 and "hook.test" in dead
    assert "127.0.0.1" not in dead.replace(f"127.0.0.1:{target.port}", "")  # the job's own URL is the customer's
    assert receiver.requests == []


async def test_the_policy_says_what_kind_of_address_a_name_resolves_to():
    policy = OutboundPolicy()
    for addr, kind in (("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("::ffff:10.1.2.3", "private"), ("fe80::1", "link-local")):
        with pytest.raises(OutboundBlocked) as info:
            policy.check_resolved("api.test", addr)
        assert kind in str(info.value) and addr not in str(info.value) and "10.1.2.3" not in str(info.value)
        assert addr in info.value.detail


# -- 3. ports -----------------------------------------------------------------------


def production(**env: str) -> OutboundPolicy:
    base = {"EZT_REGIONS_FILE": str(REGIONS_FILE), "EZT_PROFILE": "production"}
    return OutboundPolicy.from_settings(load_settings("coordinator", env={**base, **env}))


async def test_production_sends_to_80_and_443_and_the_listed_ports_only():
    policy = production(EZT_OUTBOUND_ALLOWED_PORTS="8443, 9000")
    for url in ("http://api.example:6379/", "https://api.example:8080/", "http://api.example:22/"):
        with pytest.raises(OutboundBlocked, match="port"):
            policy.check_url(url)
    for url in (
        "http://api.example/",
        "https://api.example/",
        "http://api.example:443/",
        "https://api.example:8443/",
        "http://api.example:9000/",
    ):
        policy.check_url(url)
    with pytest.raises(OutboundBlocked, match="port 8443"):
        production().check_url("https://api.example:8443/")
    # The local profile (make up-local, most tests) sends to any port.
    local = {"EZT_REGIONS_FILE": str(REGIONS_FILE), "EZT_PROFILE": "local"}
    OutboundPolicy.from_settings(load_settings("coordinator", env=local)).check_url("http://127.0.0.1:6379/")


async def test_a_production_edge_refuses_another_port_at_submit(http, start_edge, api_key):
    edge = await start_edge("iad", profile="production")
    for field, payload in (
        ("url", {"url": "http://api.example:6379/"}),
        ("webhooks[0].url", {"url": "https://api.example/", "webhooks": [{"url": "http://hooks.example:2375/in"}]}),
    ):
        status, body = await post_job(http, edge, api_key, payload)
        assert status == 422, body
        assert body["error"]["code"] == "outbound_blocked" and body["error"]["field"] == field and "port" in body["error"]["message"]


async def test_a_redirect_to_another_port_is_refused_in_production(http, start_edge, api_key, target, other, egress_guard):
    edge = await start_edge("iad", profile="production", outbound_allow_cidrs=("127.0.0.1/32",), outbound_allowed_ports=(target.port,))
    job = await submit(http, edge.url, api_key, {"url": f"{target.url}/redirect?to={other.url}/echo&code=307"})
    view = await wait_final(http, edge.url, api_key, job["job_id"])
    assert view["error"] == "outbound_blocked" and f"port {other.port}" in view["attempts"][0]["error"], view
    assert other.requests == [] and egress_guard.connects_to_port(other.port) == []


# -- 2b. nor do connection errors -----------------------------------------------------


async def test_a_failed_connect_to_an_allow_listed_name_names_no_address(http, start_edge, start_delivery, api_key, target):
    """A name on an allow-listed internal network that does not answer: the customer
    reads that the connect failed, not the internal address the name resolved to."""
    from ezthrottle_server.delivery.app import CTX

    closed = free_port()
    names = {"billing.test": ["127.0.0.3"]}
    internal = {"outbound_allow_loopback": False, "outbound_allow_cidrs": ("127.0.0.1/32", "127.0.0.3/32")}
    edge = await start_edge("iad", **internal, edge_delivers_webhooks=False)  # the delivery service's POSTs (FAST backoffs)
    await use_resolver(edge, names)
    worker = await start_delivery(**internal, delivery_window_s=0.3)
    sender = worker.app[CTX].worker.sender
    await sender.close()
    sender.resolver = StaticResolver(names)
    await sender.start()
    payload = {
        "url": f"http://billing.test:{closed}/charge",
        "retry_policy": {"max_retries": 0, "max_reroutes": 0},
        "webhooks": [{"url": f"http://billing.test:{closed}/hook"}],
    }
    job = await submit(http, edge.url, api_key, payload)
    view = await wait_webhooks(http, edge.url, api_key, job["job_id"], all_in("dead"))
    [attempt] = view["attempts"]
    [endpoint] = view["webhooks"]["endpoints"]
    assert "billing.test" in attempt["error"] and "onnect" in attempt["error"], attempt
    assert "onnect" in endpoint["last_error"], endpoint
    assert "127.0.0.3" not in str(view)


# -- the settings ---------------------------------------------------------------------


async def test_the_settings_come_from_regions_yaml_and_bad_values_name_the_setting(tmp_path):
    regions = tmp_path / "regions.yaml"
    base = REGIONS_FILE.read_text().replace(
        "outbound:\n", "outbound:\n  allowed_ports: [8443, 9000]\n  redirect_sensitive_headers: [X-Api-Key]\n", 1
    )
    regions.write_text(base)
    settings = load_settings("coordinator", env={"EZT_PROFILE": "production"}, regions_file=regions)
    assert settings.outbound_allowed_ports == (8443, 9000) and settings.redirect_sensitive_headers == ("x-api-key",)
    OutboundPolicy.from_settings(settings).check_url("https://api.example:9000/")
    for bad in ("70000", "0", "https", "-1"):
        with pytest.raises(ConfigError, match="EZT_OUTBOUND_ALLOWED_PORTS"):
            load_settings("coordinator", env={"EZT_OUTBOUND_ALLOWED_PORTS": bad}, regions_file=regions)
