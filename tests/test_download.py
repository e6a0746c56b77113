"""Resumable downloads against a local HTTP server (127.0.0.1 only) that supports Range and can fail."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psdif.data import download

REPO = Path(__file__).resolve().parents[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    cut_once: set = set()      # paths whose first response is cut half-way
    ranges_seen: list = []
    errors: dict = {}          # path -> HTTP statuses answered first, one per request
    requests: list = []        # every path asked for, in order

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        if self.errors.get(self.path):
            self.send_error(self.errors[self.path].pop(0))
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.ranges_seen.append((self.path, start))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if self.path in self.cut_once:
            self.cut_once.discard(self.path)
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


@pytest.fixture()
def server():
    _Handler.files, _Handler.cut_once, _Handler.ranges_seen, _Handler.errors, _Handler.requests = {}, set(), [], {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_resumes_after_a_cut_connection_and_checks_hash(server, tmp_path):
    _, url = server
    body = np.random.default_rng(0).bytes(300_000)
    _Handler.files["/a.bin"] = body
    _Handler.cut_once.add("/a.bin")
    digest = hashlib.sha256(body).hexdigest()
    out = download.fetch(url + "/a.bin", tmp_path / "a.bin", digest, retries=2, progress=False, backoff=0)
    assert out.read_bytes() == body
    assert _Handler.ranges_seen == [("/a.bin", 150_000)]  # the second attempt resumed, not restarted
    assert not (tmp_path / "a.bin.part").exists()


def test_fetch_refuses_a_wrong_hash_and_names_the_url(server, tmp_path):
    _, url = server
    _Handler.files["/b.txt"] = b"tampered"
    with pytest.raises(download.DownloadError, match=r"/b.txt: SHA-256 .* does not match the pinned"):
        download.fetch(url + "/b.txt", tmp_path / "b.txt", "0" * 64, retries=0, progress=False)
    assert not (tmp_path / "b.txt").exists()


def test_an_http_4xx_is_final_at_once_naming_url_and_status(server, tmp_path):
    _, url = server
    with pytest.raises(download.DownloadError, match=r"/missing: HTTP 404 .*not retried\); nothing was written") as err:
        download.fetch(url + "/missing", tmp_path / "m", retries=3, progress=False, backoff=0)
    assert err.value.unreachable and "partial file" not in str(err.value)
    assert _Handler.requests == ["/missing"]  # asked once: no retry of a client error
    assert not list(tmp_path.iterdir())


def test_a_5xx_is_retried_and_the_download_then_completes(server, tmp_path):
    _, url = server
    body = np.random.default_rng(2).bytes(50_000)
    _Handler.files["/c.bin"] = body
    _Handler.errors["/c.bin"] = [500, 503]
    out = download.fetch(url + "/c.bin", tmp_path / "c.bin", hashlib.sha256(body).hexdigest(), retries=2,
                         progress=False, backoff=0)
    assert out.read_bytes() == body
    assert _Handler.requests == ["/c.bin"] * 3


def test_a_refused_connection_is_retried_then_named_without_a_file_that_does_not_exist(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on (bound, then closed)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(download.DownloadError, match=r"failed after 3 attempts .*refused.*nothing was written") as err:
        download.fetch(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", retries=2, progress=False, backoff=0)
    assert err.value.unreachable and "partial file" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_giving_up_names_the_partial_file_it_keeps(server, tmp_path):
    _, url = server
    _Handler.files["/d.bin"] = b"x" * 1000
    (tmp_path / "d.bin.part").write_bytes(b"x" * 400)     # an earlier interrupted download
    _Handler.errors["/d.bin"] = [502, 502]
    with pytest.raises(download.DownloadError, match=r"failed after 2 attempts .*the partial file "
                       r".*d\.bin\.part \(0\.0 MiB\) is kept, run again to resume"):
        download.fetch(url + "/d.bin", tmp_path / "d.bin", retries=1, progress=False, backoff=0)
    assert (tmp_path / "d.bin.part").read_bytes() == b"x" * 400


def test_a_second_download_into_a_locked_folder_is_refused_naming_the_pid(tmp_path):
    from psdif.process import FolderLockedError, folder_lock

    work = tmp_path / "downloads"
    hold = ("import time\nfrom psdif.process import folder_lock\n"
            f"with folder_lock({str(work)!r}, 'x'):\n print('locked', flush=True)\n time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in work.iterdir())
        with pytest.raises(FolderLockedError, match=rf"{work} \(the KITTI download folder\) is in use by another "
                           rf"process \(PID {holder.pid}\)"):
            download.download_kitti([("http://127.0.0.1:9/never.zip", "2011_09_26/calib")], tmp_path / "raw", work,
                                    retries=0, progress=False)
        assert sorted(p.name for p in work.iterdir()) == before and not (tmp_path / "raw").exists()
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(work, "x"):  # the kernel dropped the killed holder's lock
        assert (work / ".psdif.lock").read_text().strip() == str(os.getpid())
    assert not (work / ".psdif.lock").exists()  # released: the folder is left as it was


def _zip_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"


def _png() -> bytes:
    png = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((8, 12, 3)) * 255).astype(np.uint8)).save(png, "PNG")
    return png.getvalue()


def _serve_kitti(base: str) -> None:
    """A drive archive and its date's calibration archive, at KITTI's paths below ``base``."""
    _Handler.files[f"{base}/2011_09_26_calib.zip"] = _zip_bytes(
        {f"2011_09_26/{n}": f"{n}\n" for n in download.CALIB_FILES})
    _Handler.files[f"{base}/2011_09_26_drive_0001/2011_09_26_drive_0001_sync.zip"] = _zip_bytes(
        {f"{DRIVE}/image_02/data/0000000000.png": _png(), f"{DRIVE}/oxts/data/0000000000.txt": "0 " * 30})


def test_download_kitti_fetches_only_what_is_missing_and_converts(server, tmp_path):
    _, url = server
    _serve_kitti("/raw_data")
    root, work = tmp_path / "raw", tmp_path / "data" / "downloads"
    archives = download.missing_archives(root, [DRIVE], url + "/raw_data")
    assert archives == [(f"{url}/raw_data/2011_09_26_calib.zip", "2011_09_26/calib"),
                        (f"{url}/raw_data/2011_09_26_drive_0001/2011_09_26_drive_0001_sync.zip", DRIVE)]
    assert download.download_kitti(archives, root, work, retries=0, jpeg_quality=92, progress=False) == [
        "2011_09_26_calib.zip", "2011_09_26_drive_0001_sync.zip"]
    jpg = root / DRIVE / "image_02/data/0000000000.jpg"
    assert jpg.exists() and not jpg.with_suffix(".png").exists()
    assert (root / "2011_09_26/calib_cam_to_cam.txt").read_text() == "calib_cam_to_cam.txt\n"
    assert list(work.iterdir()) == []                       # archives deleted once extracted
    assert sorted(p.name for p in root.iterdir()) == ["2011_09_26"]  # no bookkeeping, no staging left
    # present now: nothing is missing, nothing is fetched again
    assert download.missing_archives(root, [DRIVE], url + "/raw_data") == []


def test_drives_and_calibration_on_disk_count_as_present(tmp_path):
    """A user's copy (no psdif markers anywhere) is present; a date with only some calib files is not."""
    (tmp_path / DRIVE / "image_02" / "data").mkdir(parents=True)
    for name in download.CALIB_FILES[:2]:
        (tmp_path / "2011_09_26" / name).write_text("x")
    assert download.missing_archives(tmp_path, [DRIVE], "http://h/r") == [("http://h/r/2011_09_26_calib.zip",
                                                                          "2011_09_26/calib")]
    (tmp_path / "2011_09_26" / download.CALIB_FILES[2]).write_text("x")
    assert download.missing_archives(tmp_path, [DRIVE], "http://h/r") == []


def test_archive_urls_rebuild_the_published_archive_list():
    """KITTI's layout, checked against psdif/splits/kitti_archives_to_download.txt (66 archives)."""
    base = "https://s3.eu-central-1.amazonaws.com/avg-kitti/raw_data"
    lines = (REPO / "psdif" / "splits" / "kitti_archives_to_download.txt").read_text().split()
    rebuilt = []
    for line in lines:
        name = line.rsplit("/", 1)[-1]
        if name.endswith("_calib.zip"):
            rebuilt.append(download.calib_archive_url(base, name[:10]))
        else:
            rebuilt.append(download.drive_archive_url(base, f"{name[:10]}/{name[:-len('.zip')]}"))
    assert rebuilt == lines and len(lines) == 66


def test_shipped_split_lists_match_their_sha256sums():
    """psdif/splits holds Monodepth2's published lists, byte for byte (SHA256SUMS), and nothing unlisted."""
    folder = REPO / "psdif" / "splits"
    sums = dict(reversed(line.split()) for line in (folder / "SHA256SUMS").read_text().splitlines() if line.strip())
    for rel, digest in sums.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest, rel
    shipped = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert shipped == set(sums)
    # the published line counts (eigen test 697, eigen_zhou 39,810 / 4,424)
    counts = {rel: len((folder / rel).read_text().splitlines()) for rel in sums}
    assert counts["eigen/test_files.txt"] == 697
    assert (counts["eigen_zhou/train_files.txt"], counts["eigen_zhou/val_files.txt"]) == (39810, 4424)


def test_an_archive_without_its_drive_is_refused_naming_it(server, tmp_path):
    _, url = server
    _Handler.files["/r/2011_09_26_drive_0001/2011_09_26_drive_0001_sync.zip"] = _zip_bytes({"other/file.txt": "x"})
    archives = download.missing_archives(tmp_path / "raw", [DRIVE], url + "/r")[1:]
    with pytest.raises(download.DownloadError, match="drive_0001_sync.zip: the archive did not provide"):
        download.download_kitti(archives, tmp_path / "raw", tmp_path / "dl", retries=0, progress=False)


def test_corrupt_zip_is_named(tmp_path):
    bad = tmp_path / "x.zip"
    data = bytearray(_zip_bytes({"a.txt": "hello world" * 100}))
    data[60] ^= 0xFF  # flip a byte of the stored member
    bad.write_bytes(bytes(data))
    with pytest.raises(download.DownloadError, match="x.zip"):
        download.verify_zip(bad)



def _crafted_zip(path, name: str, data: bytes = b"payload", symlink: bool = False) -> None:
    import stat

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("2011_09_26/calib_cam_to_cam.txt", "S_rect_02: 12 8\n")  # an honest member first
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, data)


@pytest.mark.parametrize("name,symlink,why", [
    ("../evil.txt", False, "'..'"),
    ("2011_09_26/../../evil.txt", False, "'..'"),
    ("..\\evil.txt", False, "'..'"),
    ("/tmp/evil.txt", False, "absolute"),
    ("C:/evil.txt", False, "absolute"),
    ("2011_09_26/link", True, "symbolic link"),
])
def test_extract_zip_refuses_members_that_escape_or_link(tmp_path, name, symlink, why):
    """Checked by our own code before anything is written, not left to zipfile (which silently rewrites
    '../x' to 'x' and writes a link's target as a file)."""
    archive = tmp_path / "2011_09_26_calib.zip"
    _crafted_zip(archive, name, b"/etc/passwd" if symlink else b"payload", symlink)
    root = tmp_path / "work" / "raw"
    root.mkdir(parents=True)
    with pytest.raises(download.DownloadError) as err:
        download.extract_zip(archive, root)
    msg = str(err.value)
    assert str(archive) in msg and repr(name) in msg and why in msg
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != archive]
    assert written == [], written  # not even the honest member: refused before extraction
