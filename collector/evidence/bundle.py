"""Evidence bundles: one signed ``.zip`` per export, verifiable with or without hatang.

A bundle holds ``evidence.xlsx``, ``evidence.pdf``, ``csv/*.csv``, the declarations'
attachments under ``attachments/``, ``SHA256SUMS`` (their hashes for ``sha256sum -c``),
then ``manifest.json`` (every member's SHA-256 and
size, the period, the unit, the org/targets/compliance files' hashes, the legal basis
applied, the store's hash-chain heads, versions and times) and ``manifest.sig``: the raw
64-byte Ed25519 signature of ``manifest.json``'s exact bytes, which ``openssl pkeyutl
-verify -rawin`` checks (docs/evidence.md). The key is the collector's
(``evidence.signing_key``), created owner-only on first use.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT: Final = "hatang-evidence-bundle"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
SIGNATURE: Final = "manifest.sig"
SUMS: Final = "SHA256SUMS"
# Bounds for reading a bundle someone handed us: a zip bomb or a huge archive stops here.
MAX_MEMBERS: Final = 20_000
MAX_MEMBER_BYTES: Final = 1 << 30
MAX_TOTAL_BYTES: Final = 4 << 30
MAX_RATIO: Final = 200  # uncompressed ÷ compressed beyond this (and 1 MiB) is a bomb
MAX_MANIFEST_BYTES: Final = 64 << 20
_SAFE_NAME: Final = re.compile(r"\A[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\Z")


class EvidenceError(Exception):
    """A usage or input problem (exit 2): the message names the file and what is wrong."""


# -- keys --------------------------------------------------------------------------------


def load_or_create_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The signing key at ``path``; created (0600, PKCS#8 PEM) when missing. Returns the
    key and whether it was created now."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another export made it a moment ago: use that one
            return load_or_create_key(path)
        except OSError as exc:
            raise EvidenceError(f"{path}: cannot create the signing key: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        return key, True
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    return _private_key(data, str(path)), False


def load_key(path: Path) -> Ed25519PrivateKey | None:
    """The signing key, or None when none was created yet (the server never creates one)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    return _private_key(data, str(path))


def _private_key(data: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise EvidenceError(f"{where}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"{where}: not an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex: what a person compares by eye."""
    return hashlib.sha256(public_raw(key)).hexdigest()


def public_key_info(key: Ed25519PublicKey) -> dict[str, str]:
    return {
        "algorithm": "Ed25519",
        "public_key_pem": public_pem(key),
        "public_key_base64": base64.b64encode(public_raw(key)).decode("ascii"),
        "fingerprint_sha256": fingerprint(key),
    }


def read_public_key(path: Path) -> Ed25519PublicKey:
    """A public key file: PEM (SubjectPublicKeyInfo) or the raw 32 bytes in base64."""
    try:
        data = path.read_bytes()[:100_000]
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if b"BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError) as exc:
        raise EvidenceError(f"{path}: not an Ed25519 public key (PEM or base64): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"{path}: not an Ed25519 public key")
    return key


# -- writing -----------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The manifest's bytes: what is signed and stored (sorted keys, UTF-8, newline)."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def write_bundle(
    path: Path,
    members: Sequence[tuple[str, bytes]],
    manifest: dict[str, Any],
    key: Ed25519PrivateKey,
) -> None:
    """Write members, then the manifest listing them and its signature (atomically)."""
    listed = []
    for name, data in members:
        if not _SAFE_NAME.match(name) or name in (MANIFEST, SIGNATURE, SUMS):
            raise ValueError(f"bad member name {name!r}")
        listed.append({"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    # The same hashes in `sha256sum -c` format, for auditors without hatang or jq.
    sums = "".join(f"{e['sha256']}  {e['name']}\n" for e in listed).encode()
    members = [*members, (SUMS, sums)]
    listed.append({"name": SUMS, "sha256": hashlib.sha256(sums).hexdigest(), "size": len(sums)})
    manifest = {**manifest, "members": listed, "public_key": public_key_info(key.public_key())}
    body = canonical(manifest)
    signature = key.sign(body)
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
        archive.writestr(MANIFEST, body)
        archive.writestr(SIGNATURE, signature)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


# -- verifying ---------------------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    """What ``verify`` found: member problems, and whether the signature holds."""

    problems: list[str] = field(default_factory=list)
    signature: str = ""
    signature_ok: bool = False

    @property
    def ok(self) -> bool:
        return self.signature_ok and not self.problems


def _check_names(infos: Sequence[zipfile.ZipInfo], where: str) -> None:
    if len(infos) > MAX_MEMBERS:
        raise EvidenceError(f"{where}: {len(infos)} members: more than a bundle ever holds")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if not _SAFE_NAME.match(name) or ".." in name.split("/"):
            raise EvidenceError(f"{where}: hostile member name {name[:200]!r} (not a bundle)")
        if name in seen:
            raise EvidenceError(f"{where}: member {name!r} appears twice (not a bundle)")
        seen.add(name)
        total += info.file_size
        if info.file_size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
            raise EvidenceError(f"{where}: member {name!r} is too large to be evidence")
        if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(1, info.compress_size):
            raise EvidenceError(
                f"{where}: member {name!r} expands {info.file_size // max(1, info.compress_size)}"
                " times (a zip bomb?); not read"
            )


def _digest(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with archive.open(info) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            size += len(chunk)
            if size > info.file_size:  # zipfile checks this too; never trust one guard
                raise EvidenceError(f"member {info.filename!r} is longer than its header says")
            digest.update(chunk)
    return digest.hexdigest(), size


def verify(bundle: Path, public_key: Ed25519PublicKey | None = None) -> Verdict:
    """Check a bundle: every member against the manifest, the manifest against its
    signature (``public_key``, else the key the manifest names). EvidenceError when the
    file is not a readable bundle at all."""
    where = str(bundle)
    try:
        archive = zipfile.ZipFile(bundle)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise EvidenceError(f"{where}: not a zip file ({exc})") from None
    with archive:
        infos = archive.infolist()
        _check_names(infos, where)
        by_name = {i.filename: i for i in infos}
        info = by_name.get(MANIFEST)
        if info is None:
            raise EvidenceError(f"{where}: no {MANIFEST}: not a hatang evidence bundle")
        if info.file_size > MAX_MANIFEST_BYTES:
            raise EvidenceError(f"{where}: {MANIFEST} is too large")
        try:
            body = archive.read(info)
            manifest = json.loads(body)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise EvidenceError(f"{where}: {MANIFEST} cannot be read as JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise EvidenceError(f"{where}: {MANIFEST} is not a hatang evidence manifest")
        verdict = Verdict()
        listed = manifest.get("members")
        if not isinstance(listed, list):
            listed = []
            verdict.problems.append(f"{MANIFEST}: changed (no member list)")
        names: set[str] = set()
        for entry in listed:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                verdict.problems.append(f"{MANIFEST}: changed (a member entry is malformed)")
                continue
            name = entry["name"]
            names.add(name)
            member = by_name.get(name)
            if member is None:
                verdict.problems.append(f"{name}: removed")
                continue
            try:
                digest, size = _digest(archive, member)
            except (zipfile.BadZipFile, OSError, EOFError, EvidenceError) as exc:
                verdict.problems.append(f"{name}: changed (cannot be read: {exc})")
                continue
            if digest != entry.get("sha256") or size != entry.get("size"):
                verdict.problems.append(f"{name}: changed")
        for name in sorted(set(by_name) - names - {MANIFEST, SIGNATURE}):
            verdict.problems.append(f"{name}: added")
        sig_info = by_name.get(SIGNATURE)
        key = public_key
        origin = "the key given"
        if key is None:
            origin = "the key named in the manifest (pass --key to check it is your collector's)"
            try:
                raw = base64.b64decode(manifest["public_key"]["public_key_base64"], validate=True)
                key = Ed25519PublicKey.from_public_bytes(raw)
            except (KeyError, TypeError, ValueError):
                key = None
        if sig_info is None:
            verdict.problems.append(f"{SIGNATURE}: removed")
            verdict.signature = "signature: MISSING"
        elif key is None:
            verdict.signature = f"signature: cannot be checked ({MANIFEST} names no valid key)"
        else:
            signature = archive.read(sig_info) if sig_info.file_size <= 1024 else b""
            try:
                key.verify(signature, body)
                verdict.signature_ok = True
                verdict.signature = f"signature: valid, {origin}, fingerprint {fingerprint(key)}"
            except InvalidSignature:
                verdict.signature = (
                    f"signature: INVALID for {origin} ({MANIFEST} or {SIGNATURE} changed,"
                    " or another key signed it)"
                )
                verdict.problems.append(f"{MANIFEST}: changed or not signed by this key")
        return verdict


def bundle_name(unit: str, period: str, when: dt.datetime) -> str:
    safe = unit.replace("/", "_")
    return f"hatang-evidence-{safe}-{period}-{when:%Y%m%dT%H%M%SZ}.zip"


def zip_members(data: bytes) -> list[str]:
    """Member names of a bundle in memory (tests, tools)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.namelist()
