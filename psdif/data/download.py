"""Downloads for the real-data path: resumable HTTP fetch (Range), retries, SHA-256 pins, zip checks.

KITTI raw (66 zips, ~175 GB): every archive is fetched to ``<raw_root>/.downloads/`` with HTTP Range
resume, tested as a zip (CRC of every member) before extraction, extracted atomically per archive (a
marker file records a finished archive, so an interrupted run resumes with the next one), and
optionally converted PNG -> JPEG (quality from params, 4:2:0). The published split lists are fetched
with pinned SHA-256 hashes and refused when they differ.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from psdif.io import atomic_path, sha256_file

# SHA-256 of the published split lists (facts: the files as distributed with Monodepth2).
SPLIT_SHA256 = {
    "eigen/test_files.txt": "e226d4ca16e0e6e9695435014347dcf973588531330536fd8a68d298ef091a6b",
    "eigen_benchmark/test_files.txt": "d56e5e509e6960a01fb93795f85028ac6e4a82ad40e64b6e968988e4db95b9be",
    "eigen_zhou/train_files.txt": "00173a231642151c4693274e701ddd4cae7916520a757c7a94eae8e1173f7b0c",
    "eigen_zhou/val_files.txt": "64a868b8d2c66c3979a2d74c22ea2e9146850d5b9f5786ed8e5f92201ba1ad04",
    "kitti_archives_to_download.txt": "9899630a856ea2661a06d223440561395792e15538ebe97f3b719a04b91e4386",
}


class DownloadError(RuntimeError):
    """A fetch failed for good, or its content does not match its pin; the message names the URL/file."""


def fetch(url: str, dest: str | Path, sha256: str | None = None, retries: int = 5, timeout: float = 60,
          progress: bool = True, backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request.

    The finished file appears at ``dest`` only after its size (and hash, when pinned) checks out.
    """
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, progress)
            break
        except (urllib.error.URLError, OSError, DownloadError) as exc:
            last_error = exc
            if attempt < retries:
                time.sleep(backoff * 2 ** attempt)
    else:
        raise DownloadError(f"{url}: failed after {retries + 1} attempts ({last_error}); "
                            f"the partial file {part} is kept, run again to resume")
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(f"{url}: SHA-256 {got} does not match the pinned {sha256}; file discarded")
    os.replace(part, dest)
    return dest


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
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                          desc=Path(url).name, disable=not progress) as bar:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise DownloadError(f"{url}: connection closed at {part.stat().st_size} of {total} bytes")


def fetch_splits(base_url: str, splits_dir: str | Path, retries: int = 5, progress: bool = True) -> list[Path]:
    """The published split lists, each checked against its pinned SHA-256."""
    out = []
    for rel, digest in SPLIT_SHA256.items():
        out.append(fetch(f"{base_url.rstrip('/')}/{rel}", Path(splits_dir) / rel, digest, retries,
                         progress=progress))
    return out


def verify_zip(path: str | Path) -> None:
    """Check every member's CRC; raise naming the archive and the bad member."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{path}: not a valid zip ({exc}); delete it and run again") from None
    if bad is not None:
        raise DownloadError(f"{path}: member {bad} fails its CRC check; delete the archive and run again")


def extract_zip(path: str | Path, root: str | Path, jpeg_quality: int | None = None) -> None:
    """Extract into ``root`` through a staging folder; with ``jpeg_quality``, PNG images become JPEG.

    Every member name is checked first, by this code rather than left to ``zipfile`` (which silently
    rewrites ``../x`` to ``x``): an absolute name (``/x``, ``C:/x``), a ``..`` component (``/`` or ``\\``
    separated) or a symbolic link refuses the whole archive with a :class:`DownloadError` naming it and
    the member, before anything is written.
    """
    import stat

    root = Path(root)
    stage = root / ".extracting" / Path(path).stem
    with zipfile.ZipFile(path) as zf:
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
            raise DownloadError(f"{path}: member {info.filename!r} {why}; refusing to extract an archive that "
                                f"could write outside {root}. It is not a genuine KITTI raw archive: delete it "
                                "and run again")
        shutil.rmtree(stage, ignore_errors=True)
        zf.extractall(stage)
    if jpeg_quality is not None:
        png_to_jpeg(stage, jpeg_quality)
    for src in sorted(p for p in stage.rglob("*") if p.is_file()):
        dest = root / src.relative_to(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    shutil.rmtree(stage, ignore_errors=True)


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


def download_kitti(archive_urls: list[str], root: str | Path, retries: int = 5, jpeg_quality: int | None = None,
                   progress: bool = True) -> list[str]:
    """Fetch, verify and extract every archive; finished archives (marker files) are skipped."""
    root = Path(root)
    done_dir = root / ".downloads" / "done"
    done_dir.mkdir(parents=True, exist_ok=True)
    finished = []
    for url in tqdm(archive_urls, desc="KITTI archives", unit="zip", disable=not progress):
        name = Path(url).name
        marker = done_dir / (name + ".ok")
        if marker.exists():
            finished.append(name)
            continue
        zpath = fetch(url, root / ".downloads" / name, None, retries, progress=progress)
        verify_zip(zpath)
        extract_zip(zpath, root, jpeg_quality)
        marker.write_text("ok\n")
        zpath.unlink()  # 175 GB of zips need not stay beside the extracted copy
        finished.append(name)
    return finished
