"""Webhook secrets sealed at rest: AES-256-GCM bound to where the value is kept."""

import base64

import pytest

from ezthrottle_server.common.config import ConfigError, load_settings
from ezthrottle_server.common.secretbox import (
    SecretBox,
    SecretBoxError,
    is_sealed,
    new_key,
    open_webhook_secrets,
    parse_keys,
    seal_webhook_secrets,
)
from support.services import REGIONS_FILE

K1, K2 = new_key(), new_key()
SECRET = "whsec_a_secret_of_at_least_16_chars"


def box(spec: str) -> SecretBox:
    return SecretBox(parse_keys(spec))


def test_a_sealed_secret_opens_at_its_place_and_shows_nothing_of_itself():
    b = box(f"k1:{K1}")
    sealed = b.seal(SECRET, "webhook-secret|acme|primary")
    assert is_sealed(sealed) and sealed.startswith("ezt1:k1:")
    assert SECRET not in sealed and SECRET[:8] not in sealed
    assert b.seal(SECRET, "webhook-secret|acme|primary") != sealed  # a fresh nonce each time
    assert b.open(sealed, "webhook-secret|acme|primary") == SECRET


def test_a_sealed_secret_moved_to_another_customer_or_altered_does_not_open():
    b = box(f"k1:{K1}")
    sealed = b.seal(SECRET, "webhook-secret|acme|primary")
    with pytest.raises(SecretBoxError, match="does not open"):
        b.open(sealed, "webhook-secret|globex|primary")
    with pytest.raises(SecretBoxError, match="does not open"):
        b.open(sealed, "webhook-secret|acme|secondary")
    raw = bytearray(base64.urlsafe_b64decode(sealed.split(":", 2)[2]))
    raw[-1] ^= 1
    with pytest.raises(SecretBoxError, match="does not open"):
        b.open("ezt1:k1:" + base64.urlsafe_b64encode(bytes(raw)).decode(), "webhook-secret|acme|primary")


def test_rotation_seals_with_the_first_key_and_opens_with_every_key_listed():
    old = box(f"k1:{K1}")
    sealed_old = old.seal(SECRET, "c")
    rotated = box(f"k2:{K2},k1:{K1}")
    assert rotated.open(sealed_old, "c") == SECRET
    assert rotated.needs_reseal(sealed_old) and not rotated.needs_reseal(rotated.seal(SECRET, "c"))
    assert rotated.seal(SECRET, "c").startswith("ezt1:k2:")
    with pytest.raises(SecretBoxError, match=r"key 'k1'.*it has: k2"):
        box(f"k2:{K2}").open(sealed_old, "c")


def test_without_keys_secrets_are_kept_as_given_and_a_sealed_one_says_which_key_is_missing():
    plain = SecretBox(())
    assert not plain.enabled and plain.seal(SECRET, "c") == SECRET and plain.open(SECRET, "c") == SECRET
    assert not plain.needs_reseal(SECRET)
    with pytest.raises(SecretBoxError, match="stored unsealed while EZT_SECRETS_KEYS is set"):
        box(f"k1:{K1}").open(SECRET, "c")  # stored before keys were set (or planted): refused, a downgrade
    assert box(f"k1:{K1}").open(SECRET, "c", allow_unsealed=True) == SECRET  # what `secrets reseal` reads
    assert box(f"k1:{K1}").needs_reseal(SECRET)
    with pytest.raises(SecretBoxError, match="it has: none"):
        plain.open(box(f"k1:{K1}").seal(SECRET, "c"), "c")


def test_a_customers_pair_of_secrets_round_trips():
    b = box(f"k1:{K1}")
    fields = seal_webhook_secrets(b, "acme", SECRET, SECRET + "_2")
    assert fields[0::2] == ["primary", "secondary"] and all(is_sealed(v) for v in fields[1::2])
    assert open_webhook_secrets(b, "acme", fields[1], fields[3]) == (SECRET, SECRET + "_2")
    assert open_webhook_secrets(b, "acme", None, None) is None
    assert seal_webhook_secrets(b, "acme", SECRET, None)[0::2] == ["primary"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("k1", "is not '<key id>:<base64 key>'"),
        (f"bad id:{K1}", "is not '<key id>:<base64 key>'"),
        ("k1:not*base64", "is not base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "must be 32 bytes"),
        (f"k1:{K1},k1:{K2}", "listed twice"),
    ],
)
def test_bad_keys_are_refused_naming_the_setting_and_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_keys(spec)
    with pytest.raises(ConfigError, match="EZT_SECRETS_KEYS"):
        load_settings("delivery", env={"EZT_REGIONS_FILE": str(REGIONS_FILE), "EZT_SECRETS_KEYS": spec})


def test_keys_come_from_the_environment_in_either_base64_alphabet_and_are_never_printed():
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(K1)).decode().rstrip("=")
    settings = load_settings("delivery", env={"EZT_REGIONS_FILE": str(REGIONS_FILE), "EZT_SECRETS_KEYS": f"k2:{K2}, k1:{urlsafe}"})
    assert [kid for kid, _ in settings.secrets_keys] == ["k2", "k1"]
    assert dict(settings.secrets_keys)["k1"] == base64.b64decode(K1)
    assert K1 not in repr(settings) and "secrets_keys" not in repr(settings)
