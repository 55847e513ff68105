"""The SDK without a server: its public surface, error mapping, retries and settings.

Retries are driven through httpx's ``MockTransport`` (a transport the SDK accepts for exactly
this); everything the SDK does against a real server is in tests/e2e/test_sdk.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import httpx
import pytest

import coffer.client
import coffer.client.envelope
import coffer.client.tink_kms
from coffer import errors
from coffer.api.errors import status_of
from coffer.client import AsyncClient, Client, Connection, ProfileError, error_from_response

KMS_KEY = {
    "identity": "kms-1", "name": "k", "slug": "k", "description": None, "labels": {},
    "annotations": {}, "projectId": None, "keyType": "aes256-gcm96", "status": "active",
    "exportAllowed": False, "imported": False, "keyRotationEnabled": False,
    "rotationPeriodInDays": None, "latestVersion": 1, "minDecryptionVersion": 1,
    "versions": [], "deletionScheduledAt": None, "createdAt": "2026-11-28T12:00:00Z",
    "updatedAt": "2026-11-28T12:00:00Z", "objectVersion": 1,
    "organisation": {"identity": "org-1", "name": "o", "slug": "o",
                     "createdAt": "2026-11-28T12:00:00Z", "objectVersion": 1},
}  # fmt: skip


def test_the_public_surface_is_pinned() -> None:
    assert coffer.client.__all__ == [
        "AsyncClient", "Client", "Connection", "ProfileError", "error_from_response",
    ]  # fmt: skip
    assert coffer.client.envelope.__all__ == [
        "MAGIC", "SEGMENT_SIZE", "DataKeyCache", "Envelope", "EnvelopeError", "Header",
        "atomic_output", "read_header",
    ]  # fmt: skip
    assert coffer.client.tink_kms.__all__ == [
        "SCHEME", "CofferAead", "CofferKmsClient", "key_uri", "parse_key_uri",
    ]  # fmt: skip
    for module in (coffer.client, coffer.client.envelope, coffer.client.tink_kms):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_sync_and_async_clients_have_the_same_methods() -> None:
    def methods(obj: object) -> set[str]:
        return {n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n))}

    sync, async_ = Client("http://x", "t"), AsyncClient("http://x", "t")
    assert methods(sync) - {"close"} == methods(async_) - {"aclose"}
    for space in ("keys", "audit", "organisations", "projects", "service_accounts", "tokens",
                  "role_bindings"):  # fmt: skip
        assert methods(getattr(sync, space)) == methods(getattr(async_, space)), space
    sync.close()
    asyncio.run(async_.aclose())


@pytest.mark.parametrize(
    "cls", [errors.CofferError, *errors._all_subclasses(errors.CofferError)], ids=lambda c: c.code
)
def test_every_error_code_maps_back_to_its_class(cls: type[errors.CofferError]) -> None:
    """The body the server sends for an error becomes the class it raised (or, for classes
    sharing a code, the most general one with that code)."""
    raised = cls("what went wrong")
    body = json.dumps({"message": raised.message, "code": raised.code, "requestId": "r-1"})
    received = error_from_response(status_of(raised), body.encode())
    assert type(received) is errors.error_class_for_code(cls.code)
    assert isinstance(raised, type(received)) or cls is errors.CofferError  # base: "internal"
    assert received.code == cls.code
    assert received.message == "what went wrong"
    assert received.request_id == "r-1"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, errors.InvalidRequest), (401, errors.Unauthenticated), (403, errors.Forbidden),
     (404, errors.NotFound), (409, errors.Conflict), (429, errors.Unavailable),
     (502, errors.Unavailable), (500, errors.Internal)],
)  # fmt: skip
def test_answers_without_a_coffer_body_map_by_status(
    status: int, expected: type[errors.CofferError]
) -> None:
    assert type(error_from_response(status, b"<html>proxy error</html>")) is expected
    unknown = json.dumps({"message": "m", "code": "from_a_newer_server", "requestId": "r"})
    assert type(error_from_response(status, unknown.encode())) is expected


class Script:
    """A transport that answers from a list and records what it was sent."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def busy(status: int = 503, **headers: str) -> httpx.Response:
    body = {"message": "busy", "code": "unavailable", "requestId": "r"}
    return httpx.Response(status, json=body, headers=headers)


def ok_encrypt() -> httpx.Response:
    return httpx.Response(200, json={"ciphertext": "thalassa:v1:AAAA", "keyVersion": "1"})


def client_for(script: Script, retries: int = 3) -> Client:
    return Client("http://coffer.test", "tok", organisation="org", project="proj", region="r1",
                  retries=retries, backoff=0.001, transport=httpx.MockTransport(script))  # fmt: skip


def test_idempotent_calls_are_retried_on_503_429_and_lost_connections() -> None:
    script = Script(busy(503), busy(429, **{"Retry-After": "0"}), httpx.ReadError("reset"),
                    ok_encrypt())  # fmt: skip
    with client_for(script) as client:
        sealed = client.encrypt("k", b"data")
    assert sealed.ciphertext == "thalassa:v1:AAAA"
    assert len(script.requests) == 4
    sent = script.requests[0]
    assert sent.url == "http://coffer.test/v1/kms/r1/keys/k/encrypt"
    assert sent.headers["authorization"] == "Bearer tok"
    assert sent.headers["x-organisation-identity"] == "org"
    assert sent.headers["x-project-identity"] == "proj"
    assert json.loads(sent.content) == {"plaintext": "ZGF0YQ=="}  # base64 on the wire only


def test_retries_stop_after_the_limit_with_the_servers_error() -> None:
    script = Script(busy(), busy(), busy())
    with client_for(script, retries=2) as client, pytest.raises(errors.Unavailable) as caught:
        client.decrypt("k", "thalassa:v1:AAAA")
    assert len(script.requests) == 3
    assert caught.value.request_id == "r"


def test_calls_that_change_something_are_not_retried_after_the_request_was_sent() -> None:
    script = Script(busy(), httpx.Response(200, json=KMS_KEY))
    with client_for(script) as client, pytest.raises(errors.Unavailable):
        client.keys.rotate("k")
    assert len(script.requests) == 1

    script = Script(httpx.ReadError("reset"))
    with client_for(script) as client, pytest.raises(errors.Unavailable, match="cannot reach"):
        client.keys.create("k", "aes256-gcm96")
    assert len(script.requests) == 1


def test_calls_that_change_something_are_retried_when_the_connection_never_opened() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.Response(201, json=KMS_KEY))
    with client_for(script) as client:
        key = client.keys.create("k", "aes256-gcm96", labels={"team": "pay"})
    assert key.identity == "kms-1"
    assert len(script.requests) == 2
    assert json.loads(script.requests[1].content) == {
        "name": "k", "keyType": "aes256-gcm96", "labels": {"team": "pay"},
    }  # fmt: skip


def test_client_errors_are_not_retried() -> None:
    body = {"message": "key not found", "code": "key_not_found", "requestId": "r-9"}
    script = Script(httpx.Response(404, json=body))
    with client_for(script) as client, pytest.raises(errors.KeyNotFound) as caught:
        client.keys.get("missing")
    assert len(script.requests) == 1
    assert caught.value.request_id == "r-9"


def test_the_async_client_retries_the_same_way() -> None:
    script = Script(busy(), ok_encrypt())

    async def run() -> str:
        async with AsyncClient("http://coffer.test", "tok", organisation="o", backoff=0.001,
                               transport=httpx.MockTransport(script)) as client:  # fmt: skip
            return (await client.encrypt("k", b"x")).ciphertext

    assert asyncio.run(run()) == "thalassa:v1:AAAA"
    assert len(script.requests) == 2


def test_path_segments_are_escaped() -> None:
    script = Script(httpx.Response(200, json=KMS_KEY))
    with client_for(script) as client:
        client.keys.get("a/b?c", region="x y")
    assert script.requests[0].url.raw_path == b"/v1/kms/x%20y/keys/a%2Fb%3Fc"


# --- settings -------------------------------------------------------------------------------


def write_profiles(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_arguments_beat_the_environment_which_beats_the_profile(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, """
[default]
url = "https://profile.example"
token = "profile-token"
organisation = "profile-org"
region = "de-01"

[staging]
url = "https://staging.example"
""")  # fmt: skip
    env = {"COFFER_PROFILE_FILE": str(path), "COFFER_TOKEN": "env-token"}
    resolved = Connection.resolve(organisation="arg-org", environ=env)
    assert resolved == Connection(url="https://profile.example", token="env-token",
                                  organisation="arg-org", region="de-01")  # fmt: skip
    staging = Connection.resolve(environ={**env, "COFFER_PROFILE": "staging"})
    assert staging.url == "https://staging.example"
    assert staging.region == "nl-01"  # the default
    assert "env-token" not in repr(resolved)


def test_no_profile_file_gives_the_defaults(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert Connection.resolve(environ=env) == Connection()
    with pytest.raises(ProfileError, match="does not exist"):
        Connection.resolve(profile="prod", environ=env)


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [('[default]\ntoken = "t"\n', 0o644, "readable by others"),
     ("[default\n", 0o600, "not valid TOML"),
     ('[default]\npassword = "x"\n', 0o600, "unknown settings password"),
     ('[default]\nregion = 3\n', 0o600, "must be strings")],
)  # fmt: skip
def test_a_bad_profile_file_is_refused_with_a_reason(
    tmp_path: Path, text: str, mode: int, message: str
) -> None:
    env = {"COFFER_PROFILE_FILE": str(write_profiles(tmp_path, text, mode))}
    with pytest.raises(ProfileError, match=message):
        Connection.resolve(environ=env)


def test_a_profiles_token_goes_only_to_the_profiles_server(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, '[default]\nurl = "https://prod.example"\ntoken = "prod"\n')
    env = {"COFFER_PROFILE_FILE": str(path)}
    assert Connection.resolve(environ=env).token == "prod"
    assert Connection.resolve(environ={**env, "COFFER_URL": "http://dev:8200"}).token is None
    assert Connection.resolve(url="http://dev:8200", environ=env).token is None
    # A token given alongside the other URL is the caller's choice.
    assert Connection.resolve(url="http://dev:8200", token="dev", environ=env).token == "dev"


def test_an_answer_that_is_not_coffers_is_unavailable_not_a_traceback() -> None:
    script = Script(httpx.Response(200, text="<html>captive portal</html>"))
    with client_for(script) as client, pytest.raises(errors.Unavailable, match="HTTP 200"):
        client.keys.get("k")


def test_a_break_glass_export_is_never_repeated_by_a_retry() -> None:
    script = Script(busy(503), httpx.Response(200, json={"keyMaterial": "AA==", "keyVersion": "1"}))
    with client_for(script) as client, pytest.raises(errors.Unavailable):
        client.keys.export("k")
    assert len(script.requests) == 1


def _tls_failure() -> httpx.ConnectError:
    error = httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
    error.__cause__ = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    return error


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (_tls_failure(), "is the server serving plain HTTP? then use http://"),
        (httpx.RemoteProtocolError("illegal status line"), "then use https://"),
    ],
    ids=["a failed TLS handshake", "an answer that is not HTTP"],
)
def test_tls_and_protocol_errors_are_not_retried(error: Exception, said: str) -> None:
    script = Script(error, ok_encrypt())
    with client_for(script) as client, pytest.raises(errors.Unavailable) as caught:
        client.encrypt("k", b"data")
    assert len(script.requests) == 1
    assert said in caught.value.message
    assert "\n" not in caught.value.message


def test_the_ca_certificate_comes_from_the_environment_and_must_be_pem(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "COFFER_CA_CERT": "/etc/ca.pem"}
    assert Connection.resolve(environ=env).ca_cert == "/etc/ca.pem"
    assert Connection.resolve(ca_cert="/x.pem", environ=env).ca_cert == "/x.pem"
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    with pytest.raises(errors.InvalidRequest, match="CA certificate file"):
        Client("https://coffer.test", "t", ca_cert=str(not_pem))
    with pytest.raises(errors.InvalidRequest, match="No such file"):
        Client("https://coffer.test", "t", ca_cert=str(tmp_path / "missing.pem"))
