"""Test-side restore: fetch a backup object, check its SHA-256, decrypt, decompress, pg_restore."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from charhub_ops.backup.manifest import Manifest
from charhub_ops.storage import Storage
from charhub_ops.streams import decompress, decrypt


def fetch_dump(storage: Storage, manifest: Manifest, dest: Path, identities: list | None = None) -> Path:
    raw = storage.get_bytes(manifest.dump.key)
    assert hashlib.sha256(raw).hexdigest() == manifest.sha256
    assert len(raw) == manifest.stored_size_bytes
    src = Path(str(dest) + ".stored")
    src.write_bytes(raw)
    with open(src, "rb") as f, open(dest, "wb") as out:
        stream = decrypt(f, identities) if identities else f
        shutil.copyfileobj(decompress(stream), out, 1 << 20)
    return dest


def pg_restore(bindir: Path, url: str, dump: Path) -> None:
    subprocess.run([str(bindir / "pg_restore"), "--no-owner", "--exit-on-error", "-d", url, str(dump)],
                   check=True, capture_output=True)
