"""Local repository races, made deterministic on the real filesystem: a concurrent backup creates a
file in a directory that prune's cleanup found empty; a concurrent prune deletes a file (or a whole
backup directory) while a listing runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from charhub_ops.errors import StorageError
from charhub_ops.storage import LocalStorage


@pytest.fixture
def store(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "repo")


def test_cleanup_keeps_a_directory_a_backup_starts_filling(store, monkeypatch):
    """The backup writes its first file right before the cleanup deletes the (then empty) directory."""
    store.put_bytes("db/old/manifest.json", b"{}")
    store.delete_many(["db/old/manifest.json"])
    (store.root / "db" / "new").mkdir()
    arriving = store.root / "db" / "new" / "dump.pgc.zst.partial-1234"
    written = []

    def writer_first(real):
        def hooked(path, *args, **kwargs):
            if isinstance(path, str) and Path(path) == arriving.parent and not written:
                arriving.write_bytes(b"dump data")  # once: the writer does not come back
                written.append(path)
            return real(path, *args, **kwargs)
        return hooked

    monkeypatch.setattr(os, "rmdir", writer_first(os.rmdir))
    monkeypatch.setattr(shutil, "rmtree", writer_first(shutil.rmtree))
    store.remove_empty_dirs()
    assert arriving.read_bytes() == b"dump data"
    assert not (store.root / "db" / "old").exists()  # the really empty one went


def _walk_then(action):
    """os.walk that runs ``action`` once it has listed everything (before the caller stats files)."""
    real = os.walk

    def walk(top, *args, **kwargs):
        yield from real(top, *args, **kwargs)
        action()
    return walk


def test_list_skips_a_file_deleted_after_the_walk(store, monkeypatch):
    for key in ("db/a/manifest.json", "db/b/manifest.json"):
        store.put_bytes(key, b"{}")
    monkeypatch.setattr(os, "walk", _walk_then(lambda: (store.root / "db/a/manifest.json").unlink()))
    assert [o.key for o in store.list("db/")] == ["db/b/manifest.json"]


def test_list_skips_a_directory_removed_during_the_walk(store, monkeypatch):
    for key in ("db/a/dump", "db/b/dump", "db/c/dump"):
        store.put_bytes(key, b"x")
    real = os.scandir

    def scandir(path="."):
        if isinstance(path, str) and Path(path) == store.root / "db" / "b":  # a prune removes it just before
            shutil.rmtree(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert [o.key for o in store.list("db/")] == ["db/a/dump", "db/c/dump"]


def test_list_partial_skips_a_temporary_file_renamed_meanwhile(store, monkeypatch):
    partial = store.root / "db" / "x" / "dump.partial-abcd"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x")
    monkeypatch.setattr(os, "walk", _walk_then(lambda: partial.rename(partial.with_name("dump"))))
    assert list(store.list_partial()) == []


def test_an_unreadable_directory_is_an_error_not_an_empty_listing(store, monkeypatch):
    store.put_bytes("db/a/dump", b"x")
    real = os.scandir

    def scandir(path="."):
        if isinstance(path, str) and Path(path) == store.root / "db":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(StorageError, match="Permission denied") as info:
        list(store.list("db/"))
    assert not info.value.transient
