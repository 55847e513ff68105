"""``GET /metrics``: Prometheus text format, requests by operation and status, latency, cache hits
and misses, audit batch sizes; no identity or secret in any label; off with ``metrics = false``.

The counters live for the whole test process (every app of the suite adds to them), so each test
compares values before and after what it does."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coffer.api.routes import ENDPOINTS
from tests.conftest import Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"


def samples(kms: Kms) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = kms.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_operation_and_status(kms: Kms) -> None:
    kms.create_key("k")
    before = samples(kms)
    for _ in range(3):
        assert kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="}).status_code == 200
    assert kms.post(f"{KEYS}/missing/encrypt", {"plaintext": "AA=="}).status_code == 404
    assert kms.get(f"{KEYS}/k").status_code == 200
    assert kms.client.get("/no/such/path").status_code == 404
    after = samples(kms)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("coffer_requests_total", operation="encrypt", status="200") == 3
    assert delta("coffer_requests_total", operation="encrypt", status="404") == 1
    assert delta("coffer_requests_total", operation="get_key", status="200") == 1
    assert delta("coffer_requests_total", operation="unmatched", status="404") == 1
    assert delta("coffer_request_duration_seconds_count", operation="encrypt") == 4
    assert delta("coffer_request_duration_seconds_sum", operation="encrypt") > 0
    assert delta("coffer_request_duration_seconds_bucket", operation="encrypt", le="+Inf") == 4


def test_cache_hits_and_misses_and_audit_batches_are_counted(kms: Kms) -> None:
    kms.create_key("k")
    assert kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="}).status_code == 200
    before = samples(kms)
    for _ in range(5):
        assert kms.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="}).status_code == 200
    after = samples(kms)
    for cache in ("token", "caller", "key", "key_handle"):
        hits = value(after, "coffer_cache_hits_total", cache=cache)
        assert hits - value(before, "coffer_cache_hits_total", cache=cache) >= 5, cache
    assert value(after, "coffer_cache_misses_total", cache="key") >= 1  # the first lookup
    # Every audited request's record went through a batch.
    batched = value(after, "coffer_audit_batch_size_sum") - value(
        before, "coffer_audit_batch_size_sum"
    )
    assert batched >= 5


def test_labels_carry_operation_names_never_identities_or_secrets(kms: Kms) -> None:
    key = kms.create_key("secret-slug")
    kms.post(f"{KEYS}/secret-slug/encrypt", {"plaintext": "AA=="})
    kms.post(f"{KEYS}/{key['identity']}/encrypt", {"plaintext": "AA=="})
    text = kms.client.get("/metrics").text
    for forbidden in (key["identity"], "secret-slug", kms.boot.token, kms.org, "/v1/kms"):
        assert forbidden not in text
    operations = set(re.findall(r'operation="([^"]+)"', text))
    assert operations <= {e.operation for e in ENDPOINTS} | {"unmatched", "openapi"}


def test_metrics_need_no_token_and_are_in_the_openapi_document(kms: Kms) -> None:
    response = kms.client.get("/metrics")  # no Authorization header
    assert response.status_code == 200
    assert "# TYPE coffer_requests_total counter" in response.text
    document = kms.client.get("/openapi.json").json()
    operation = document["paths"]["/metrics"]["get"]
    assert operation["security"] == []
    assert "text/plain" in next(iter(operation["responses"]["200"]["content"]))


@pytest.fixture
def unmetered(tmp_path: Path) -> Iterator[Kms]:
    settings = dataclasses.replace(make_settings(tmp_path / "unmetered"), metrics=False)
    yield from open_kms(settings, initialised(settings))


def test_metrics_false_serves_no_metrics_and_counts_nothing(unmetered: Kms, kms: Kms) -> None:
    assert unmetered.client.get("/metrics").status_code == 404
    unmetered.create_key("k")
    before = samples(kms)
    for _ in range(3):
        assert unmetered.post(f"{KEYS}/k/encrypt", {"plaintext": "AA=="}).status_code == 200
    after = samples(kms)
    # Only the other app's own scrape moved anything.
    moved = {name for name, v in after.items() if v != before.get(name, 0.0)}
    assert all(("operation", "encrypt") not in labels for _, labels in moved)
    assert not any(name[0].startswith("coffer_cache") for name in moved)
