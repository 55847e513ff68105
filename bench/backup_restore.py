"""`coffer backup` and `coffer restore` of a large installation, timed.

    .venv/bin/python bench/backup_restore.py [--keys 1000000] [--workdir DIR]

Makes an installation with `coffer init`, a template key and a few ciphertexts through the API,
adds `--keys` keys straight into its database (`bulk_keys.py`: real rows, wrapped and MACed as
the server writes them), then, with the server running, times `coffer backup`, and times
`coffer restore` into a new directory (which checks the file's digest, the root key and the audit
chain). The restored installation is then served and decrypts a ciphertext made before the
backup under one of the bulk keys and under a rotated key.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bulk_keys import add_keys

COFFER = Path(sys.executable).with_name("coffer")
PORT = 18731


def coffer(*args: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(COFFER), *map(str, args)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"coffer {args[0]} failed: {done.stderr}")
    return done


def serve(data: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [str(COFFER), "serve", "--data-dir", str(data), "--port", str(PORT)]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server did not start: {log.read_text()}")


def call(token: str, org: str, path: str, body: object) -> dict[str, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/v1/kms/nl-01{path}", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "X-Organisation-Identity": org,
                 "Content-Type": "application/json"}, method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, str] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"POST {path}: {exc.code} {exc.read().decode()}") from None


def size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coffer-backup-bench-", dir=args.workdir))
    data, restored, backup = work / "data", work / "restored", work / "coffer.backup"
    try:
        boot = json.loads(coffer("init", "--data-dir", data, "-o", "json").stdout)
        token, org = boot["token"], boot["organisation"]
        server = serve(data, work / "a.log")
        try:
            call(token, org, "/keys", {"name": "aes256-gcm96", "keyType": "aes256-gcm96"})
            call(token, org, "/keys", {"name": "rotated", "keyType": "aes256-gcm96"})
            old = call(token, org, "/keys/rotated/encrypt", {"plaintext": "b2xk"})["ciphertext"]
            call(token, org, "/keys/rotated/rotate", {})
        finally:
            server.terminate()
            server.wait()
        took = add_keys(data, "aes256-gcm96", args.keys, 0, work / "ids")
        print(f"{args.keys:,} keys written into the database in {took:.1f} s "
              f"({size(data / 'coffer.db')})")  # fmt: skip
        server = serve(data, work / "b.log")
        try:
            sealed = call(token, org, "/keys/bk-123/encrypt", {"plaintext": "bWlsbGlvbg=="})
            began = time.perf_counter()
            coffer("backup", backup, "--data-dir", data)
            backup_seconds = time.perf_counter() - began
        finally:
            server.terminate()
            server.wait()
        began = time.perf_counter()
        coffer("restore", backup, "--data-dir", restored, "--root-key", data / "root.key")
        restore_seconds = time.perf_counter() - began
        server = serve(restored, work / "c.log")
        try:
            opened = call(token, org, "/keys/bk-123/decrypt", {"ciphertext": sealed["ciphertext"]})
            assert base64.b64decode(opened["plaintext"]) == b"million"
            assert call(token, org, "/keys/rotated/decrypt", {"ciphertext": old})["plaintext"]
        finally:
            server.terminate()
            server.wait()
        print(f"coffer backup  (server running): {backup_seconds:6.1f} s, file {size(backup)}")
        print(f"coffer restore (digest, root key, audit verify): {restore_seconds:6.1f} s")
        print("the restored server decrypts what was encrypted before the backup: yes")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
