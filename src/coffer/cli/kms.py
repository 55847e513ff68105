"""``coffer keys ...`` and ``coffer encrypt|decrypt|sign|verify|hmac|verify-hmac``.

Everything goes through the running server with ``coffer.client``. Data comes from an argument
(UTF-8), ``--in FILE`` or stdin, and is binary-safe; decrypted bytes go to stdout or ``--out``.
In text mode ``encrypt``, ``sign`` and ``hmac`` print the ``thalassa:vN:`` string alone, so
that scripts can capture it; ``--output json`` prints one JSON object. ``verify`` and
``verify-hmac`` exit 1 when the signature or MAC does not match, as ``openssl dgst -verify``
does.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from coffer.cli.connect import (
    App,
    CaCert,
    In,
    Org,
    Out,
    Output,
    OutputFormat,
    Profile,
    Project,
    Region,
    Token,
    Url,
    client,
    fail,
    parse_days,
    read_input,
    show,
    write_output,
)
from coffer.client import Client
from coffer.domain.keytypes import MAX_PLAINTEXT_BYTES, KeyType
from coffer.domain.signing import DEFAULT_HASH, MAX_INPUT_BYTES, parse_hash

keys_app = App(help="Keys and their life cycle.")
_KEY_COLUMNS = ("identity", "slug", "keyType", "status", "latestVersion", "createdAt")

Key = Annotated[
    str, typer.Argument(help="Key identity or slug.", metavar="KEY", show_default=False)
]
Data = Annotated[
    str | None,
    typer.Argument(help="The data, as text (or use --in, or stdin).", metavar="DATA",
                   show_default=False),
]  # fmt: skip
_KEY_TYPES = ", ".join(KeyType)


def _key_type(value: str | None) -> str | None:
    """``--type``, checked here so that a typo is told with the list of types at once."""
    if value is not None and value not in set(KeyType):
        raise typer.BadParameter(f"unknown key type {value!r}: use one of {_KEY_TYPES}")
    return value


KeyTypeOption = Annotated[
    str, typer.Option("--type", callback=_key_type, metavar="TYPE",
                      help=f"One of {_KEY_TYPES}.")
]  # fmt: skip
KeyVersion = Annotated[
    int | None, typer.Option("--key-version", help="Key version (default: latest).",
                             show_default=False, min=1),
]  # fmt: skip


def _pairs(values: list[str] | None, option: str) -> dict[str, str] | None:
    if not values:
        return None
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{option} takes NAME=VALUE, not {value!r}")
        pairs[name] = text
    return pairs


# --- keys -----------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Name (the slug is derived from it).")],
    key_type: KeyTypeOption,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable.")] = None,
    annotation: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable.")] = None,
    export_allowed: Annotated[bool, typer.Option(help="Allow break-glass export.")] = False,
    rotation_period: Annotated[
        int | None,
        typer.Option(parser=parse_days, metavar="DURATION",
                     help="Rotate automatically this often, in days: e.g. 90d."),
    ] = None,
    import_file: Annotated[
        Path | None,
        typer.Option(help="Wrapped key material to import (BYOK, see docs/byok.md)."),
    ] = None,
    hash_function: Annotated[
        str | None, typer.Option(help="OAEP hash of the wrapped material (default sha256).")
    ] = None,
    allow_rotation: Annotated[bool, typer.Option(help="Imported key: allow rotation.")] = False,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Create a key."""
    labels = _pairs(label, "--label")
    annotations = _pairs(annotation, "--annotation")
    with client(url, token, org, project, region, profile, ca_cert=ca_cert) as coffer:
        material = import_file.read_bytes() if import_file is not None else None
        key = coffer.keys.create(
            name,
            key_type,
            description=description,
            labels=labels,
            annotations=annotations,
            export_allowed=export_allowed,
            key_rotation_enabled=rotation_period is not None,
            rotation_period_in_days=rotation_period,
            import_key_material=material,
            hash_function=hash_function,
            allow_rotation=allow_rotation,
        )
    show(key, output, _KEY_COLUMNS)


@keys_app.command("list")
def keys_list(
    status: Annotated[str | None, typer.Option(help="active, disabled, pending_deletion.")] = None,
    key_type: Annotated[
        str | None,
        typer.Option("--type", callback=_key_type, metavar="TYPE", help="Only this key type."),
    ] = None,
    label: Annotated[list[str] | None, typer.Option(help="NAME=VALUE that must match.")] = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Keys of the organisation (or of the project, with --project)."""
    labels = _pairs(label, "--label")
    with client(url, token, org, project, region, profile, ca_cert=ca_cert) as coffer:
        keys = coffer.keys.list(status=status, key_type=key_type, labels=labels)
    show(keys, output, _KEY_COLUMNS)


def _key_command(name: str, summary: str) -> None:
    def command(
        key: Key,
        url: Url = None, token: Token = None, org: Org = None, project: Project = None,
        region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
        output: Output = OutputFormat.TEXT,
    ) -> None:  # fmt: skip
        with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
            action = getattr(coffer.keys, name.replace("-", "_"))
            show(action(key), output, _KEY_COLUMNS)

    command.__doc__ = summary
    keys_app.command(name)(command)


_key_command("get", "Show a key.")
_key_command("rotate", "Make a new latest version; older versions keep decrypting.")
_key_command("disable", "Disable a key: no cryptographic operation until enabled.")
_key_command("enable", "Enable a disabled key.")
_key_command("delete", "Schedule a key for deletion (after the retention period).")
_key_command("cancel-deletion", "Cancel a scheduled deletion.")


@keys_app.command("public-key")
def keys_public_key(
    key: Key,
    key_version: KeyVersion = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Print the public key (PEM; Ed25519: base64 of the raw key) of each usable version."""
    with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
        keys = coffer.keys.public_key(key, version=key_version).keys
    if output is OutputFormat.JSON:
        show({"keys": keys}, output, ())
        return
    for number, public in sorted(keys.items(), key=lambda item: int(item[0])):
        if len(keys) > 1:
            typer.echo(f"# version {number}")
        typer.echo(public.rstrip("\n"))


@keys_app.command("export")
def keys_export(
    key: Key,
    key_version: KeyVersion = None,
    out: Out = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Break-glass export: raw key bytes (symmetric, HMAC) or PKCS#8 DER. To --out FILE (mode
    600) as bytes, else base64 on stdout."""
    with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
        exported = coffer.keys.export(key, version=key_version)
        if output is OutputFormat.JSON:
            show(exported, output, ())
        elif out is not None:
            write_output(exported.key_material, out)
        else:
            typer.echo(base64.b64encode(exported.key_material).decode())


def summary(
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    profile: Profile = None, ca_cert: CaCert = None, output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Whether the KMS is on for the organisation, and key counts per region."""
    with client(url, token, org, project, None, profile, ca_cert=ca_cert) as coffer:
        answer = coffer.summary()
    if output is OutputFormat.JSON:
        show(answer, output, ())
        return
    typer.echo(f"KMS enabled: {'yes' if answer.feature_enabled else 'no'}")
    columns = ("slug", "kmsAvailable", "totalKeys", "activeKeys", "disabledKeys",
               "pendingDeletionKeys")  # fmt: skip
    show(answer.regions, output, columns)


# --- cryptography ---------------------------------------------------------------------------


def encrypt(
    key: Key,
    data: Data = None,
    source: In = None,
    key_version: KeyVersion = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Encrypt up to 64 KiB; print the ciphertext. Larger data: `coffer envelope encrypt`."""
    plaintext = read_input(data, source)
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        what = "the data" if source is None or str(source) == "-" else str(source)
        raise fail(
            f"{what} is {len(plaintext)} bytes, more than encrypt takes ({MAX_PLAINTEXT_BYTES}): "
            f"use `coffer envelope encrypt --key {key} IN --out OUT` for data of any size"
        )
    with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
        sealed = coffer.encrypt(key, plaintext, version=key_version)
    _print(sealed, sealed.ciphertext, output)


def decrypt(
    key: Key,
    ciphertext: Annotated[
        str | None,
        typer.Argument(help="thalassa:vN:... (or use --in, or stdin).", show_default=False),
    ] = None,
    source: In = None,
    out: Out = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Decrypt a ciphertext; write the plaintext bytes to stdout or --out."""
    text = read_input(ciphertext, source).decode("ascii", errors="replace").strip()
    with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
        opened = coffer.decrypt(key, text)
        if output is OutputFormat.JSON:
            show(opened, output, ())
        else:
            write_output(opened.plaintext, out)


HashAlgorithm = Annotated[
    str | None, typer.Option(help="sha2-256 (default), sha2-384, sha2-512, sha3-256, ...")
]
SignatureAlgorithm = Annotated[str | None, typer.Option(help="RSA: pss (default) or pkcs1v15.")]
Marshaling = Annotated[str | None, typer.Option(help="ECDSA: asn1 (default) or jws.")]
Prehashed = Annotated[
    bool, typer.Option(help="DATA is already the digest (of --hash-algorithm's hash).")
]


def _hashed_if_large(
    coffer: Client, key: str, message: bytes, hash_algorithm: str | None, prehashed: bool
) -> tuple[bytes, bool]:
    """The input to send and whether it is a digest: more than the server takes in one request
    is hashed here, with the hash the server would use, and sent ``prehashed`` (the signature
    is the same). Ed25519 signs the message itself, so it cannot be hashed first."""
    if prehashed or len(message) <= MAX_INPUT_BYTES:
        return message, prehashed
    key_type = coffer.keys.get(key).key_type
    if key_type == KeyType.ED25519:
        raise fail(
            f"{key} is an ed25519 key: it signs the message itself, at most {MAX_INPUT_BYTES} "
            f"bytes; sign a digest as the data instead (openssl dgst -sha256 -binary FILE | "
            f"coffer sign {key}) and verify the same way, or use an ecdsa or rsa key"
        )
    digest = parse_hash(hash_algorithm, "--hash-algorithm") or DEFAULT_HASH
    name = digest.value.replace("sha2-", "sha").replace("sha3-", "sha3_")
    return hashlib.new(name, message).digest(), True


def sign(
    key: Key,
    data: Data = None,
    source: In = None,
    key_version: KeyVersion = None,
    hash_algorithm: HashAlgorithm = None,
    prehashed: Prehashed = False,
    signature_algorithm: SignatureAlgorithm = None,
    marshaling_algorithm: Marshaling = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Sign data; print the signature. More than 64 KiB is hashed here and its digest signed
    (not for ed25519 keys)."""
    message = read_input(data, source)
    with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
        message, prehashed = _hashed_if_large(coffer, key, message, hash_algorithm, prehashed)
        signed = coffer.sign(
            key,
            message,
            version=key_version,
            hash_algorithm=hash_algorithm,
            prehashed=prehashed,
            signature_algorithm=signature_algorithm,
            marshaling_algorithm=marshaling_algorithm,
        )
    _print(signed, signed.signature, output)


def verify(
    key: Key,
    signature: Annotated[str, typer.Argument(help="thalassa:vN:... signature.")],
    data: Data = None,
    source: In = None,
    hash_algorithm: HashAlgorithm = None,
    prehashed: Prehashed = False,
    signature_algorithm: SignatureAlgorithm = None,
    marshaling_algorithm: Marshaling = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Check a signature: exit 0 if it is valid, 1 if not. More than 64 KiB is hashed here, as
    sign does."""
    message = read_input(data, source)
    with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
        message, prehashed = _hashed_if_large(coffer, key, message, hash_algorithm, prehashed)
        valid = coffer.verify(
            key,
            message,
            signature,
            hash_algorithm=hash_algorithm,
            prehashed=prehashed,
            signature_algorithm=signature_algorithm,
            marshaling_algorithm=marshaling_algorithm,
        )
    _verdict(valid, output, "signature")


MacAlgorithm = Annotated[
    str | None, typer.Option(help="sha2-256 or sha2-512 (hmac keys; default: the key's own).")
]


def hmac(
    key: Key,
    data: Data = None,
    source: In = None,
    key_version: KeyVersion = None,
    algorithm: MacAlgorithm = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Compute an HMAC; print it."""
    message = read_input(data, source)
    with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
        mac = coffer.hmac(key, message, version=key_version, algorithm=algorithm)
    _print(mac, mac.hmac, output)


def verify_hmac(
    key: Key,
    mac: Annotated[str, typer.Argument(help="thalassa:vN:... HMAC.")],
    data: Data = None,
    source: In = None,
    algorithm: MacAlgorithm = None,
    url: Url = None, token: Token = None, org: Org = None, project: Project = None,
    region: Region = None, profile: Profile = None, ca_cert: CaCert = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """Check an HMAC: exit 0 if it matches, 1 if not."""
    message = read_input(data, source)
    with client(url, token, org, project, region, profile, ca_cert=ca_cert, key=key) as coffer:
        valid = coffer.verify_hmac(key, message, mac, algorithm=algorithm)
    _verdict(valid, output, "HMAC")


def _print(response: object, text: str, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        show(response, output, ())
    else:
        typer.echo(text)


def _verdict(valid: bool, output: OutputFormat, what: str) -> None:
    if output is OutputFormat.JSON:
        show({"valid": valid}, output, ())
    elif valid:
        typer.echo("valid")
    if not valid:
        if output is OutputFormat.TEXT:
            print(f"coffer: the {what} is not valid", file=sys.stderr)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    for command in (summary, encrypt, decrypt, sign, verify, hmac, verify_hmac):
        app.command(command.__name__.replace("_", "-"))(command)
