"""Sign and HMAC throughput of a real `coffer serve`, against the in-process `cryptography` rate
of the same primitive measured in the same run, and encrypt latency while RSA-4096 keys are being
created.

    .venv/bin/python bench/http_sign.py [--seconds 10] [--connections 64]

Needs `wrk`. Starts its own server on a fresh data directory (audit on, as shipped), creates one
key of each measured type, then:

1. measures, in this process, how many signatures one core makes with `cryptography` alone (the
   per-core ceiling of the primitive);
2. drives `POST .../sign` (ecdsa-p256, ed25519, rsa-2048) and `POST .../hmac` with a 64-byte
   input through HTTP, and prints rps, p50, p99 and rps / in-process rate per core;
3. drives `encrypt` on an aes256-gcm96 key alone, then again while another client creates
   rsa-4096 keys back to back, and prints both p50/p99: key generation must not stall other
   requests.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from harness import free_port, lua, request, start_server, wrk

INPUT = os.urandom(64)


def per_core_rate(operation: Callable[[], object], seconds: float = 2.0) -> float:
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        operation()
        count += 1
    return count / (time.perf_counter() - started)


def in_process_rates(seconds: float = 2.0) -> dict[str, float]:
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    mac_key = os.urandom(32)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)

    def mac() -> bytes:
        h = hmac.HMAC(mac_key, hashes.SHA256())
        h.update(INPUT)
        return h.finalize()

    return {
        "ecdsa-p256": per_core_rate(lambda: ec_key.sign(INPUT, ec.ECDSA(hashes.SHA256())), seconds),
        "ed25519": per_core_rate(lambda: ed_key.sign(INPUT), seconds),
        "rsa-2048": per_core_rate(lambda: rsa_key.sign(INPUT, pss, hashes.SHA256()), seconds),
        "hmac": per_core_rate(mac, seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--audit",
        choices=["database", "discard"],
        default="database",
        help="discard: measure the signing path without the audit log's commit wait",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    keys = f"{base}/v1/kms/nl-01/keys"
    server = None
    try:
        config = tmp / "coffer.toml"
        config.write_text(f'audit_sink = "{args.audit}"\n')
        server, headers = start_server(tmp, port, "--config", config)
        for key_type in ("ecdsa-p256", "ed25519", "rsa-2048", "hmac", "aes256-gcm96"):
            request(keys, headers, {"name": key_type, "keyType": key_type})

        rates = in_process_rates()
        json_headers = {**headers, "Content-Type": "application/json"}
        body = json.dumps({"input": base64.b64encode(INPUT).decode()})
        results = []
        for key_type in ("ecdsa-p256", "ed25519", "rsa-2048", "hmac"):
            operation = "hmac" if key_type == "hmac" else "sign"
            script = lua(tmp / f"{key_type}.lua", "POST", json_headers, body)
            url = f"{keys}/{key_type}/{operation}"
            wrk(url, script, 2, args.connections)  # warm-up
            results.append((f"{operation} {key_type}", key_type,
                            *wrk(url, script, args.seconds, args.connections)))  # fmt: skip

        plaintext = json.dumps({"plaintext": base64.b64encode(INPUT).decode()})
        encrypt = lua(tmp / "encrypt.lua", "POST", json_headers, plaintext)
        encrypt_url = f"{keys}/aes256-gcm96/encrypt"
        wrk(encrypt_url, encrypt, 2, args.connections)
        alone = wrk(encrypt_url, encrypt, args.seconds, args.connections)
        created = 0
        stop = threading.Event()

        def create_rsa_4096() -> None:
            nonlocal created
            while not stop.is_set():
                name = f"big-{created}"
                request(keys, headers, {"name": name, "keyType": "rsa-4096"})
                created += 1

        creator = threading.Thread(target=create_rsa_4096)
        creator.start()
        try:
            during = wrk(encrypt_url, encrypt, args.seconds, args.connections)
        finally:
            stop.set()
            creator.join()

        print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, one `coffer serve` process, "
              f"audit_sink = {args.audit}")  # fmt: skip
        print(f"{'operation':<20}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'in-process/core':>17}{'ratio':>8}")  # fmt: skip
        for name, key_type, rps, p50, p99 in results:
            rate = rates[key_type]
            print(f"{name:<20}{rps:>9,.0f}{p50:>9.2f}{p99:>9.2f}{rate:>17,.0f}{rps / rate:>8.0%}")
        print()
        print(f"{'encrypt aes256-gcm96':<36}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}")
        print(f"{'alone':<36}{alone[0]:>9,.0f}{alone[1]:>9.2f}{alone[2]:>9.2f}")
        label = f"while creating rsa-4096 ({created} made)"
        print(f"{label:<36}{during[0]:>9,.0f}{during[1]:>9.2f}{during[2]:>9.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
