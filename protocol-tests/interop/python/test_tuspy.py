"""tuspy against a running tusk (TUSK_URL): chunked, resume with a stored URL, checksum.

Every scenario checks the stored bytes with GET + sha256 against the source.
Prints one PASS/FAIL line per scenario and `N passed, N failed` at the end.
"""
import hashlib
import os
import shutil
import sys
import tempfile
import time
import traceback

import requests
from tusclient import client as tus_client
from tusclient.uploader import Uploader

MiB = 1024 * 1024
ENDPOINT = os.environ.get("TUSK_URL")
if not ENDPOINT:
    print("TUSK_URL is not set (run.sh starts tusk and sets it)")
    sys.exit(2)


def make_bytes(size, seed):
    """Deterministic test bytes for (size, seed): SHAKE-256 of the seed, fast in pure Python."""
    return hashlib.shake_256(f"tusk-interop-{seed}".encode()).digest(size)


def head(url):
    return requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=30)


def verify(url, src):
    h = head(url)
    assert h.status_code == 200, f"HEAD {url} -> {h.status_code}"
    off, length = h.headers.get("Upload-Offset"), h.headers.get("Upload-Length")
    assert off == str(len(src)) and length == str(len(src)), f"HEAD offset={off} length={length}, want {len(src)}"
    g = requests.get(url, timeout=60)
    assert g.status_code == 200, f"GET {url} -> {g.status_code}"
    want, have = hashlib.sha256(src).hexdigest(), hashlib.sha256(g.content).hexdigest()
    assert have == want, f"bytes differ: GET {len(g.content)} bytes sha256 {have}, source {len(src)} bytes sha256 {want}"


class Recorder:
    """Wraps requests.Session-level sends to see what tuspy puts on the wire."""

    def __init__(self):
        self.calls = []
        self._orig = requests.Session.send
        rec = self

        def send(session, prep, **kw):
            resp = rec._orig(session, prep, **kw)
            rec.calls.append((prep.method, {k.lower(): v for k, v in prep.headers.items()}, resp.status_code))
            return resp

        self._send = send

    def __enter__(self):
        requests.Session.send = self._send
        return self

    def __exit__(self, *exc):
        requests.Session.send = self._orig

    def patches(self):
        return [c for c in self.calls if c[0] == "PATCH"]


tmpdir = tempfile.mkdtemp(prefix="tusk-interop-py-")


def write_file(name, data):
    p = os.path.join(tmpdir, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def chunked():
    src = make_bytes(5 * MiB, 21)
    path = write_file("chunked.bin", src)
    c = tus_client.TusClient(ENDPOINT)
    with Recorder() as rec:
        up = c.uploader(path, chunk_size=1 * MiB, metadata={"filename": "chunked.bin"})
        up.upload()
    patches = rec.patches()
    assert len(patches) == 5, f"expected 5 PATCHes, saw {len(patches)}"
    assert [int(p[1]["upload-offset"]) for p in patches] == [i * MiB for i in range(5)], "PATCH offsets"
    assert all(p[2] == 204 for p in patches), f"PATCH statuses {[p[2] for p in patches]}"
    verify(up.url, src)
    return f"{len(patches)} PATCHes of 1 MiB"


def resume_with_stored_url():
    src = make_bytes(5 * MiB + 7, 22)
    path = write_file("resume.bin", src)
    c = tus_client.TusClient(ENDPOINT)
    first = c.uploader(path, chunk_size=1 * MiB)
    first.upload(stop_at=2 * MiB)  # upload part, then "the app quits"
    url = first.url
    h = head(url)
    assert h.status_code == 200 and h.headers["Upload-Offset"] == str(2 * MiB), f"HEAD after partial upload: {h.status_code} {h.headers.get('Upload-Offset')}"
    with Recorder() as rec:
        second = c.uploader(path, url=url, chunk_size=1 * MiB)
        assert second.offset == 2 * MiB, f"new uploader starts at {second.offset}"
        second.upload()
    assert not any(m == "POST" for m, _, _ in rec.calls), "resume created a new upload"
    assert int(rec.patches()[0][1]["upload-offset"]) == 2 * MiB, "first PATCH after resume not at 2 MiB"
    verify(url, src)
    return f"stopped at {2 * MiB}, resumed with url= and finished"


def resume_with_url_storage():
    from tusclient.storage import filestorage

    src = make_bytes(4 * MiB + 3, 25)
    path = write_file("resume-storage.bin", src)
    storage_path = os.path.join(tmpdir, "tuspy-urls.json")
    c = tus_client.TusClient(ENDPOINT)
    storage = filestorage.FileStorage(storage_path)
    first = c.uploader(path, chunk_size=1 * MiB, store_url=True, url_storage=storage)
    first.upload(stop_at=1 * MiB)
    url = first.url
    storage.close()
    h = head(url)
    assert h.status_code == 200 and h.headers["Upload-Offset"] == str(1 * MiB), f"HEAD after partial upload: {h.status_code} {h.headers.get('Upload-Offset')}"
    # A new process would reopen the storage file and find the URL by the file's fingerprint.
    storage = filestorage.FileStorage(storage_path)
    with Recorder() as rec:
        second = c.uploader(path, chunk_size=1 * MiB, store_url=True, url_storage=storage)
        assert second.url == url, f"stored URL not found: {second.url} != {url}"
        assert second.offset == 1 * MiB, f"new uploader starts at {second.offset}"
        second.upload()
    storage.close()
    assert not any(m == "POST" for m, _, _ in rec.calls), "resume created a new upload"
    verify(url, src)
    return f"URL found via FileStorage + fingerprint, resumed at {1 * MiB}"


def checksum():
    src = make_bytes(3 * MiB + 11, 23)
    path = write_file("checksum.bin", src)
    opts = requests.options(ENDPOINT, headers={"Tus-Resumable": "1.0.0"}, timeout=30)
    algos = opts.headers.get("Tus-Checksum-Algorithm", "")
    assert "sha1" in algos.split(","), f"Tus-Checksum-Algorithm: {algos!r}"
    c = tus_client.TusClient(ENDPOINT)
    with Recorder() as rec:
        up = c.uploader(path, chunk_size=1 * MiB, upload_checksum=True)
        up.upload()
    patches = rec.patches()
    assert len(patches) == 4, f"expected 4 PATCHes, saw {len(patches)}"
    for _, hdrs, status in patches:
        assert hdrs.get("upload-checksum", "").startswith("sha1 "), f"PATCH without sha1 Upload-Checksum: {hdrs.get('upload-checksum')}"
        assert status == 204, f"PATCH with checksum -> {status}"
    verify(up.url, src)
    return f"{len(patches)} PATCHes each with Upload-Checksum: sha1"


def checksum_mismatch():
    # tuspy computes the checksum over the chunk it reads; corrupt the header on the wire to
    # check tusk's side: 460, nothing kept, and tuspy's retry then succeeds.
    src = make_bytes(2 * MiB, 24)
    path = write_file("mismatch.bin", src)
    c = tus_client.TusClient(ENDPOINT)
    up = c.uploader(path, chunk_size=1 * MiB, upload_checksum=True, retries=2, retry_delay=0)
    orig = requests.Session.send
    state = {"corrupted": 0, "statuses": []}

    def send(session, prep, **kw):
        if prep.method == "PATCH" and state["corrupted"] == 0 and prep.headers.get("upload-offset") == str(MiB):
            state["corrupted"] += 1
            prep.headers["upload-checksum"] = "sha1 " + "A" * 27 + "="
        resp = orig(session, prep, **kw)
        if prep.method == "PATCH":
            state["statuses"].append(resp.status_code)
        return resp

    requests.Session.send = send
    try:
        up.upload()
    finally:
        requests.Session.send = orig
    assert state["statuses"] == [204, 460, 204], f"PATCH statuses {state['statuses']} (want 204, 460, 204)"
    verify(up.url, src)
    return "corrupted checksum -> 460, retry -> 204"


SCENARIOS = [
    ("chunked (chunk_size 1 MiB, 5 MiB file)", chunked),
    ("resume with a stored URL (stop_at 2 MiB, new uploader with url=)", resume_with_stored_url),
    ("resume with tuspy's FileStorage (store_url=True, fingerprint lookup)", resume_with_url_storage),
    ("checksum (upload_checksum=True, sha1 per chunk)", checksum),
    ("checksum mismatch on the wire -> 460, tuspy retries", checksum_mismatch),
]


def main():
    passed = failed = 0
    for name, fn in SCENARIOS:
        t0 = time.monotonic()
        try:
            note = fn()
            passed += 1
            print(f"  PASS  tuspy: {name} ({(time.monotonic() - t0) * 1000:.0f} ms)" + (f" — {note}" if note else ""), flush=True)
        except Exception:
            failed += 1
            print(f"  FAIL  tuspy: {name} ({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
            print("        " + traceback.format_exc().replace("\n", "\n        "), flush=True)
    shutil.rmtree(tmpdir, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
