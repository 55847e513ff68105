"""The audit chain's keyed link is HMAC-SHA-256 over the previous link and the record: RFC 4231's
test case 2 (key "Jefe"), split between the two, gives the RFC's answer."""

from __future__ import annotations

from coffer.crypto.integrity import AuditLinks

RFC_4231_CASE_2 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_a_link_is_hmac_sha256_of_the_previous_link_and_the_record() -> None:
    links = AuditLinks(b"Jefe")
    assert links.link(b"what do ya want ", b"for nothing?").hex() == RFC_4231_CASE_2
    assert links.link(b"", b"what do ya want for nothing?").hex() == RFC_4231_CASE_2
    assert AuditLinks(b"Jeff").link(b"", b"what do ya want for nothing?").hex() != RFC_4231_CASE_2


def test_the_key_never_shows() -> None:
    assert "Jefe" not in repr(AuditLinks(b"Jefe"))
