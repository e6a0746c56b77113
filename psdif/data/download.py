"""Downloads for the real-data path: resumable HTTP fetch (Range), retries, SHA-256 pins, zip checks.

KITTI raw is fetched only when asked (``download.fetch: missing``) and only what is missing: the drive
archives of the drives the split lists name that are not under ``data.raw_root``, and the calibration
archive of each of their dates whose three ``calib_*.txt`` files are not there. A drive on disk counts as
present, whoever put it there (a user's copy, an earlier download). Each archive is fetched to
``data/downloads/`` (never into the KITTI copy) with HTTP Range resume, tested as a zip (CRC of every
member) before extraction, extracted into a staging folder beside the copy and moved into place (a new
drive folder appears whole, with one rename), optionally converted PNG -> JPEG, and then deleted.
Archive URLs follow KITTI's layout: ``<url>/<date>_calib.zip`` and
``<url>/<date>_drive_NNNN/<date>_drive_NNNN_sync.zip`` (``psdif/splits/kitti_archives_to_download.txt``
lists the 66 of the published splits).
"""

from __future__ import annotations

import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from psdif.data.ondisk import CALIB_FILES
from psdif.io import atomic_path, sha256_file, writes_allowed
from psdif.process import folder_lock, progress_bar, set_resume_note

STAGING = ".psdif-extracting"   # beside the KITTI copy, only while an archive is moved into it


class DownloadError(RuntimeError):
    """A fetch failed for good, or its content does not match its pin; the message names the URL/file.

    ``unreachable``: the source could not be had (an HTTP 4xx, or every retry failed), as opposed to a
    fetched file that is wrong (a hash or zip mismatch); an optional source (Make3D) may go on without it.
    """

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


class _Transient(DownloadError):
    """A failure worth retrying (a connection closed early)."""


# what a retry may cure: a 5xx answer, a timeout, a refused / reset / closed connection, a DNS failure
RETRIED = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, _Transient)


def fetch(url: str, dest: str | Path, sha256: str | None = None, retries: int = 5, timeout: float = 60,
          progress: bool = True, backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request.

    An HTTP 4xx is final at once (the server's answer will not change; 408 and 429 excepted); a 5xx, a
    timeout or a connection error is retried ``retries`` times, waiting ``backoff * 2**attempt`` seconds.
    The finished file appears at ``dest`` only after its size (and hash, when pinned) checks out.
    """
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    set_resume_note(lambda: f"{_kept(part)}; rerun `dvc repro` to resume the download")
    try:
        _fetch_retried(url, part, retries, timeout, progress, backoff)
    finally:
        set_resume_note(None)
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(f"{url}: SHA-256 {got} does not match the pinned {sha256}; file discarded")
    os.replace(part, dest)
    return dest


def _kept(part: Path) -> str:
    """What is on disk of an unfinished download (only a file that exists is named)."""
    if part.exists() and part.stat().st_size:
        return f"the partial file {part} ({part.stat().st_size / 2**20:.1f} MiB) is kept"
    return "nothing was written"


def _fetch_retried(url: str, part: Path, retries: int, timeout: float, progress: bool, backoff: float) -> None:
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return _fetch_once(url, part, timeout, progress)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason} (a client error: not retried); "
                                    f"{_kept(part)}; check the URL", unreachable=True) from None
            last_error = exc
        except RETRIED as exc:
            last_error = exc
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    resume = ", run again to resume" if part.exists() and part.stat().st_size else ""
    raise DownloadError(f"{url}: failed after {retries + 1} attempts ({last_error}); {_kept(part)}{resume}",
                        unreachable=True)


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file is complete
            return
        raise
    with resp:
        if have and resp.status != 206:  # server ignored Range: start over
            have = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as f, progress_bar(total=total, initial=have, unit="B", unit_scale=True,
                                                 desc=Path(url).name, disable=not progress) as bar:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise _Transient(f"{url}: connection closed at {part.stat().st_size} of {total} bytes")


def verify_zip(path: str | Path) -> None:
    """Check every member's CRC; raise naming the archive and the bad member."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{path}: not a valid zip ({exc}); delete it and run again") from None
    if bad is not None:
        raise DownloadError(f"{path}: member {bad} fails its CRC check; delete the archive and run again")


def _check_members(zf: zipfile.ZipFile, archive: Path, stage: Path, root: Path) -> None:
    """Refuse absolute names, '..' components, symbolic links and anything resolving outside ``stage``."""
    import stat

    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
            why = "is an absolute path"
        elif ".." in name.split("/"):
            why = "has a '..' component"
        elif stat.S_ISLNK(info.external_attr >> 16):
            why = "is a symbolic link"
        elif not (stage / name).resolve().is_relative_to(stage.resolve()):
            why = "resolves outside the extraction folder"
        else:
            continue
        raise DownloadError(f"{archive}: member {info.filename!r} {why}; refusing to extract an archive that "
                            f"could write outside {root}. It is not a genuine KITTI raw archive: delete it "
                            "and run again")


def _move_into(src: Path, dest: Path) -> None:
    """Move the tree ``src`` into ``dest``: a folder ``dest`` lacks moves with one rename (it appears whole),
    otherwise its files are moved one by one (each rename is atomic)."""
    for item in sorted(src.iterdir()):
        target = dest / item.name
        if item.is_dir() and target.is_dir():
            _move_into(item, target)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            os.replace(item, target)


def extract_zip(path: str | Path, root: str | Path, jpeg_quality: int | None = None) -> None:
    """Extract into ``root`` through a staging folder beside it; with ``jpeg_quality``, PNG images become JPEG.

    Every member name is checked first, by this code rather than left to ``zipfile`` (which silently
    rewrites ``../x`` to ``x``): an absolute name (``/x``, ``C:/x``), a ``..`` component (``/`` or ``\\``
    separated) or a symbolic link refuses the whole archive with a :class:`DownloadError` naming it and
    the member, before anything is written. A folder of the archive that ``root`` lacks (a drive) then
    appears with one rename, complete or not at all; the staging folder is removed afterwards (and first,
    when a killed run left one).
    """
    root, path = Path(root), Path(path)
    stage = root / STAGING / path.stem
    with zipfile.ZipFile(path) as zf:
        _check_members(zf, path, stage, root)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        with zipfile.ZipFile(path) as zf:
            zf.extractall(stage)
        if jpeg_quality is not None:
            with writes_allowed(stage):  # the one writer into the (otherwise read-only) KITTI copy
                png_to_jpeg(stage, jpeg_quality)
        _move_into(stage, root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        try:
            (root / STAGING).rmdir()
        except OSError:
            pass


def png_to_jpeg(folder: str | Path, quality: int) -> int:
    """Convert camera PNGs (``image_0*/data/*.png``) to JPEG with 4:2:0 chroma subsampling."""
    from PIL import Image

    n = 0
    for png in Path(folder).rglob("image_0*/data/*.png"):
        with atomic_path(png.with_suffix(".jpg")) as tmp:
            with Image.open(png) as im:
                im.convert("RGB").save(tmp, format="JPEG", quality=quality, subsampling=2)
        png.unlink()
        n += 1
    return n


# ------------------------------------------------------------------------------------------ KITTI raw

def drive_archive_url(base_url: str, folder: str) -> str:
    """``<date>/<date>_drive_NNNN_sync`` -> ``<url>/<date>_drive_NNNN/<date>_drive_NNNN_sync.zip``."""
    drive = folder.split("/")[-1]
    stem = drive[:-len("_sync")] if drive.endswith("_sync") else drive
    return f"{base_url.rstrip('/')}/{stem}/{stem}_sync.zip"


def calib_archive_url(base_url: str, date: str) -> str:
    return f"{base_url.rstrip('/')}/{date}_calib.zip"


def drive_present(root: str | Path, folder: str) -> bool:
    """A drive counts as present when its folder exists (its frames on disk are what the pipeline uses)."""
    return (Path(root) / folder).is_dir()


def calib_present(root: str | Path, date: str) -> bool:
    return all((Path(root) / date / name).is_file() for name in CALIB_FILES)


def missing_archives(root: str | Path, folders, base_url: str) -> list[tuple[str, str]]:
    """(url, what it provides) of the archives to fetch for the drives ``folders``: the calibration of every
    date without its three calib files, then every drive whose folder is absent."""
    dates = sorted({f.split("/")[0] for f in folders})
    out = [(calib_archive_url(base_url, d), f"{d}/calib") for d in dates if not calib_present(root, d)]
    out += [(drive_archive_url(base_url, f), f) for f in sorted(folders) if not drive_present(root, f)]
    return out


def download_kitti(archives: list[tuple[str, str]], root: str | Path, work_dir: str | Path, retries: int = 5,
                   jpeg_quality: int | None = None, progress: bool = True, backoff: float = 1.0) -> list[str]:
    """Fetch, verify and extract ``archives`` (from :func:`missing_archives`) into ``root``.

    Archives go to ``work_dir`` (``data/downloads``; a killed fetch resumes from its ``.part`` file) and are
    deleted once extracted. An archive that does not provide what it should (the drive folder, the calib
    files) is an error naming it. ``work_dir`` is locked meanwhile (``psdif.process.folder_lock``): a second
    download into it stops at once, naming the PID of the first. Returns the names of the archives fetched.
    """
    root, work_dir = Path(root), Path(work_dir)
    with folder_lock(work_dir, "the KITTI download folder"):
        return _download_all(archives, root, work_dir, retries, jpeg_quality, progress, backoff)


def _download_all(archives, root: Path, work_dir: Path, retries, jpeg_quality, progress, backoff) -> list[str]:
    done = []
    for url, provides in progress_bar(archives, desc="KITTI archives", unit="zip", disable=not progress):
        name = url.rstrip("/").rsplit("/", 1)[-1]
        zpath = fetch(url, work_dir / name, None, retries, progress=progress, backoff=backoff)
        verify_zip(zpath)
        extract_zip(zpath, root, jpeg_quality)
        present = (calib_present(root, provides.split("/")[0]) if provides.endswith("/calib")
                   else drive_present(root, provides))
        if not present:
            raise DownloadError(f"{url}: the archive did not provide {provides} under {root}; is "
                                "download.url a KITTI raw mirror?")
        zpath.unlink()
        done.append(name)
    return done


# ------------------------------------------------------------------------------------------ annotated depth

def download_annotated_depth(url: str, dest_root: str | Path, work_dir: str | Path, retries: int = 5,
                             progress: bool = True, backoff: float = 1.0) -> bool:
    """KITTI's annotated depth archive (``data_depth_annotated.zip``: ``train|val/<drive>/proj_depth/...``)
    fetched to ``work_dir`` (resumable), checked and extracted into ``dest_root`` (``data.depth_annotated_root``)
    as :func:`download_kitti` does a drive, when ``dest_root`` is missing or empty; a folder with anything in
    it counts as present. Returns whether it fetched."""
    dest_root, work_dir = Path(dest_root), Path(work_dir)
    if dest_root.is_dir() and any(dest_root.iterdir()):
        return False
    zpath = fetch(url, work_dir / url.rstrip("/").rsplit("/", 1)[-1], None, retries, progress=progress,
                  backoff=backoff)
    verify_zip(zpath)
    extract_zip(zpath, dest_root)
    if not any(dest_root.glob("*/proj_depth")) and not any(dest_root.glob("*/*/proj_depth")):
        raise DownloadError(f"{url}: the archive holds no <drive>/proj_depth folder under {dest_root}; is "
                            "download.depth_annotated_url KITTI's data_depth_annotated.zip?")
    zpath.unlink()
    return True
