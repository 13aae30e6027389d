"""Listing inputs page by page (S3) or directory by directory (local), with the same results as the
fsspec walk/glob listing it replaced; and the create-only / atomic writes in pipeline.storage."""

import glob as globlib
import math
import os
import threading
from collections import Counter

import pytest

from pipeline.config import StorageOptions
from pipeline.storage import filesystem, iter_objects, put_atomic, put_if_absent
from pipeline.storage import object_info as _info

NAMES = [
    "top.png", "top.jpg", ".hidden.png", "_SUCCESS", "_marker.png", "UPPER.PNG",
    "a/one.png", "a/two.tif", "a/.dot.png", "a/b/three.png", "a/b/c/four.png", "a/b/c/_skip.png",
    "d/five.png", "d/six.txt", "e-f/seven.png", "e/eight.png",
]


def reference_listing(url, storage=None, extensions=None):
    """The listing as ``iter_objects`` made it before (fsspec walk/glob), for comparison."""
    fs, path = filesystem(url, storage)
    exts = tuple(e.lower() for e in extensions) if extensions else None

    def keep(p):
        name = p.rstrip("/").rsplit("/", 1)[-1]
        return not name.startswith((".", "_")) and (exts is None or name.lower().endswith(exts))

    if globlib.has_magic(path):
        return [_info(fs, p, i) for p, i in sorted(fs.glob(path, detail=True).items()) if i.get("type") == "file" and keep(p)]
    if fs.isfile(path):
        return [_info(fs, path, fs.info(path))]
    out = []
    for _, _, files in fs.walk(path, detail=True):
        for p, info in sorted(files.items()):
            full = info.get("name", p)
            if keep(full):
                out.append(_info(fs, full, info))
    return out


CASES = [
    ("{root}/data", None),
    ("{root}/data/", None),
    ("{root}/data", [".png"]),
    ("{root}/data", [".PNG", ".tif"]),
    ("{root}/data/a", None),
    ("{root}/data/a/b/c/four.png", None),
    ("{root}/data/*.png", None),
    ("{root}/data/*/*.png", None),
    ("{root}/data/**/*.png", None),
    ("{root}/data/**", None),
    ("{root}/data/a/**/*.png", None),
    ("{root}/data/e*/*", None),
    ("{root}/data/?/*.png", None),
    ("{root}/data/[ad]/*", [".png", ".txt"]),
    ("{root}/nothing-here", None),
    ("{root}/nothing-here/*.png", None),
]


@pytest.fixture()
def s3_tree(s3_server, s3_env, bucket):
    fs = s3_server.filesystem()
    for n in NAMES:
        fs.pipe(f"{bucket}/data/{n}", n.encode())
    fs.pipe(f"{bucket}/data-sibling/x.png", b"x")  # shares the prefix "data" but is not under data/
    return f"s3://{bucket}"


@pytest.fixture()
def local_tree(tmp_path):
    for n in NAMES:
        p = tmp_path / "data" / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(n.encode())
    (tmp_path / "data-sibling").mkdir()
    (tmp_path / "data-sibling" / "x.png").write_bytes(b"x")
    return str(tmp_path)


def _cmp(url, storage, exts, page_size=None):
    kw = {"page_size": page_size} if page_size else {}
    got = list(iter_objects(url, storage, exts, **kw))
    want = reference_listing(url, storage, exts)
    assert sorted(got, key=lambda o: o.key) == sorted(want, key=lambda o: o.key), url
    assert len({o.key for o in got}) == len(got)
    return got


@pytest.mark.parametrize("pattern, exts", CASES)
def test_s3_listing_matches_the_walk_and_glob_it_replaced(s3_tree, pattern, exts):
    got = _cmp(pattern.format(root=s3_tree), StorageOptions(), exts, page_size=3)
    if pattern.endswith("/data"):
        assert got, "nothing listed"


@pytest.mark.parametrize("pattern, exts", CASES)
def test_local_listing_matches_the_walk_and_glob_it_replaced(local_tree, pattern, exts):
    got = _cmp(pattern.format(root=local_tree), None, exts)
    # exact key order on local filesystems
    assert [o.key for o in got] == sorted(o.key for o in got)


def test_s3_listing_pages_and_is_lazy(s3_tree, monkeypatch):
    import s3fs

    calls = []
    original = s3fs.S3FileSystem.call_s3

    def counting(self, method, *args, **kwargs):
        out = original(self, method, *args, **kwargs)
        if method == "list_objects_v2":
            calls.append((kwargs.get("MaxKeys"), len(out.get("Contents", []))))
        return out

    monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", counting)
    it = iter_objects(f"{s3_tree}/data/", StorageOptions(), page_size=3)
    first = next(it)
    assert len(calls) == 1, "the first object came after more than one page"
    rest = list(it)
    total = len(NAMES)  # objects under data/ (the listing then drops hidden/marker names)
    assert all(max_keys == 3 and n <= 3 for max_keys, n in calls)
    assert len(calls) in (math.ceil(total / 3), math.ceil(total / 3) + 1)
    assert sum(n for _, n in calls) == total
    assert len([first] + rest) == len(reference_listing(f"{s3_tree}/data/", StorageOptions()))
    # and a glob lists only under its literal prefix, page by page too
    calls.clear()
    got = list(iter_objects(f"{s3_tree}/data/a/**/*.png", StorageOptions(), page_size=3))
    assert sorted(o.key.rsplit("/", 1)[-1] for o in got) == ["four.png", "one.png", "three.png"]
    assert sum(n for _, n in calls) == 6 and all(mk == 3 for mk, _ in calls)  # a/* holds six objects


def test_old_signature_still_works(s3_tree, local_tree):
    assert list(iter_objects(f"{local_tree}/data", None, [".png"]))
    assert list(iter_objects(f"{s3_tree}/data", StorageOptions(), [".png"]))
    assert list(iter_objects(url=f"{local_tree}/data", storage=None, extensions=None))


# ---- create-only and atomic writes --------------------------------------------------------------


@pytest.fixture(params=["s3", "local"])
def target(request, tmp_path):
    if request.param == "s3":
        s3_server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("bucket")
        return request.param, s3_server.filesystem(), f"{bucket}/leases/x/lease.json"
    fs, path = filesystem(str(tmp_path / "leases" / "x" / "lease.json"))
    return request.param, fs, path


def test_put_if_absent_writes_once(target):
    kind, fs, path = target
    assert put_if_absent(fs, path, b"first") is True
    assert put_if_absent(fs, path, b"second") is False
    assert fs.cat_file(path) == b"first"
    # an identical write counts as done (a retried PUT whose first attempt landed)
    assert put_if_absent(fs, path, b"first") is True
    assert fs.cat_file(path) == b"first"
    if kind == "local":
        assert sorted(os.listdir(os.path.dirname(path))) == ["lease.json"]  # no temporary files left


def test_put_if_absent_has_one_winner_under_contention(target):
    kind, fs, path = target
    n = 8
    barrier = threading.Barrier(n)
    results = {}

    def worker(i):
        barrier.wait()
        results[i] = put_if_absent(fs, path, f"writer {i}".encode())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, ok in results.items() if ok]
    assert Counter(results.values()) == {True: 1, False: n - 1}
    assert fs.cat_file(path) == f"writer {winners[0]}".encode()


def test_put_atomic_replaces_whole_objects(target):
    kind, fs, path = target
    put_atomic(fs, path, b"one")
    assert fs.cat_file(path) == b"one"
    put_atomic(fs, path, b"two, longer")
    assert fs.cat_file(path) == b"two, longer"
    if kind == "local":
        assert sorted(os.listdir(os.path.dirname(path))) == ["lease.json"]
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
