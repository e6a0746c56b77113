"""Make3D Test134 (design.md §4.4): loader and optional downloader.

Layout read by ``load_make3d_test(root)``: anywhere below ``root`` (searched recursively, so both the
flat layout and the archives' own ``Test134/`` + ``Gridlaserdata/`` folders work), images
``img-<name>.jpg`` and depth files ``depth_sph_corr-<name>.mat`` holding ``Position3DGrid`` [55, 305, 4]
(channel 3 = depth in metres).

Image orientation: a Test134 image decodes to a portrait array of 2272 rows × 1704 columns (the protocol's
"rows (2272−852)/2 … +852 of 2272×1704"). The 2:1 (width:height) centre crop keeps ``W/2 = 852`` rows
starting at ``(2272 − 852)/2 = 710``, i.e. rows 710..1561, all 1704 columns — the crop of the evaluation
code of Monodepth2's Make3D users (``color_new_height = 1704 / 2``). The 55 GT rows run along the same
image rows, so GT rows 17:38 (21 of 55, 38 %) match the 852 of 2272 kept image rows (37.5 %). Images of
another size (the generated cross-domain set) get the same rule: ``W//2`` centred rows, or ``2·H``
centred columns when the image is already wider than 2:1.

``fetch_make3d`` downloads the archives named in params (``eval.make3d_urls``) with HTTP Range resume,
retries and a pinned SHA-256 (``eval.make3d_sha256``), then extracts them; the download stage calls it only
when asked to (``download.fetch: missing``), the evaluate stages never do.
"""

from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import scipy.io

from psdif.data.download import fetch
from psdif.data.images import read_image
from psdif.io import sha256_file
from psdif.process import folder_lock

GRID_SHAPE = (55, 305)  # rows x columns of a Make3D Position3DGrid (x 4 channels; depth is the last)
IMAGE_PREFIX = "img-"
DEPTH_PREFIX = "depth_sph_corr-"


@dataclass(frozen=True)
class Make3DSample:
    """One Test134 item.

    name: the id shared by ``img-<name>.jpg`` and ``depth_sph_corr-<name>.mat``.
    image: [H, W, 3] uint8 RGB, the 2:1 centre crop (852 × 1704 for real Test134).
    depth_grid: [55, 305] float64 metres, ``Position3DGrid[:, :, 3]`` (uncropped; the metric takes 17:38).
    image_path, depth_path: the source files.
    """
    name: str
    image: np.ndarray
    depth_grid: np.ndarray
    image_path: Path
    depth_path: Path


def centre_crop_2to1(image: np.ndarray) -> np.ndarray:
    """2:1 (width:height) centre crop of ``image`` [H, W, ...]: rows ``(H − W//2)//2 … + W//2`` when
    H ≥ W/2 (Test134: 2272×1704 → rows 710..1561), else centred columns ``2·H`` wide."""
    h, w = image.shape[:2]
    new_h = w // 2
    if h >= new_h:
        top = (h - new_h) // 2
        return image[top:top + new_h]
    new_w = 2 * h
    left = (w - new_w) // 2
    return image[:, left:left + new_w]


def read_depth_grid(path: Path) -> np.ndarray:
    """``Position3DGrid[:, :, 3]`` of a Make3D .mat as float64 [55, 305] metres; errors name the file."""
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a damaged file
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file ({exc}); re-extract Test134Depth") from None
    if "Position3DGrid" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: no Position3DGrid variable (has {keys}); is this a Make3D "
                         "depth_sph_corr-*.mat file?")
    grid = np.asarray(mat["Position3DGrid"])
    if grid.ndim != 3 or grid.shape[:2] != GRID_SHAPE or grid.shape[2] < 4:
        raise ValueError(f"{path}: Position3DGrid has shape {grid.shape}, expected "
                         f"{GRID_SHAPE + (4,)}")
    return grid[:, :, 3].astype(np.float64)


def _index(root: Path, prefix: str, suffix: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(root.rglob(f"{prefix}*{suffix}")):
        name = path.name[len(prefix):-len(suffix)]
        if name in found:
            raise ValueError(f"{root}: {path.name} found twice ({found[name]} and {path}); keep one copy")
        found[name] = path
    return found


def list_make3d_pairs(root: str | Path) -> list[tuple[str, Path, Path]]:
    """Sorted (name, image path, depth path) triples below ``root``; a missing half of a pair is an
    error that names the file without a partner."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Make3D root {root} does not exist; set eval.make3d_root or fetch Test134")
    images = _index(root, IMAGE_PREFIX, ".jpg")
    depths = _index(root, DEPTH_PREFIX, ".mat")
    if not images and not depths:
        raise FileNotFoundError(f"{root}: no img-*.jpg / depth_sph_corr-*.mat files (Make3D Test134)")
    for name in sorted(set(images) - set(depths)):
        raise FileNotFoundError(f"{images[name]}: no matching {DEPTH_PREFIX}{name}.mat below {root}")
    for name in sorted(set(depths) - set(images)):
        raise FileNotFoundError(f"{depths[name]}: no matching {IMAGE_PREFIX}{name}.jpg below {root}")
    return [(name, images[name], depths[name]) for name in sorted(images)]


def load_make3d_test(root: str | Path) -> list[Make3DSample]:
    """Every Test134 pair below ``root`` as ``Make3DSample`` (sorted by name), image centre-cropped 2:1."""
    samples = []
    for name, image_path, depth_path in list_make3d_pairs(root):
        image = centre_crop_2to1(read_image(image_path, hint="re-extract Test134"))
        samples.append(Make3DSample(name=name, image=np.ascontiguousarray(image),
                                    depth_grid=read_depth_grid(depth_path),
                                    image_path=image_path, depth_path=depth_path))
    return samples


# ------------------------------------------------------------------------------------------ download

def _extract(archive: Path, dest: Path) -> None:
    """Extract a .tar(.gz) or .zip into ``dest``, refusing members that escape it."""
    dest_resolved = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (dest / member).resolve().is_relative_to(dest_resolved):
                    raise ValueError(f"{archive}: member {member} would extract outside {dest}")
            zf.extractall(dest)
        return
    with tarfile.open(archive) as tf:
        tf.extractall(dest, filter="data")


def fetch_make3d(urls: Sequence[str], dest: str | Path, sha256: Sequence[Optional[str]] = (),
                 retries: int = 5, timeout: float = 60.0, backoff: float = 1.0) -> Path:
    """Download (resumable), verify and extract the Make3D Test134 archives into ``dest``.

    urls: archive URLs (Test134.tar.gz and Test134Depth.tar.gz); sha256: pinned hex digests in the same
    order (``None``/"" = unpinned: the computed digest is printed so it can be pinned). A digest mismatch
    deletes the archive and raises, naming the URL and both digests. Archives are kept in
    ``dest/archives``; an archive whose extraction finished (marker file) is not extracted again.
    Returns ``dest``.
    """
    dest = Path(dest)
    pins = list(sha256) + [None] * (len(urls) - len(sha256))
    if len(sha256) > len(urls):
        raise ValueError(f"{len(sha256)} SHA-256 pins for {len(urls)} Make3D URLs; give one per URL")
    with folder_lock(dest / "archives", "the Make3D download folder"):
        _fetch_all(urls, pins, dest, retries, timeout, backoff)
    return dest


def _fetch_all(urls, pins, dest: Path, retries: int, timeout: float, backoff: float) -> None:
    for url, pin in zip(urls, pins):
        name = url.rstrip("/").rsplit("/", 1)[-1] or "make3d_archive"
        archive = dest / "archives" / name
        marker = dest / "archives" / f".{name}.extracted"
        if marker.exists() and archive.exists():
            continue
        if not archive.exists():
            # resumable, retried; a pinned digest is checked before the file appears (psdif.data.download)
            fetch(url, archive, pin.lower() if pin else None, retries=retries, timeout=timeout, backoff=backoff)
        digest = sha256_file(archive)
        if not pin:
            print(f"make3d: {name} sha256 {digest} (unpinned; add it to eval.make3d_sha256)")
        _extract(archive, dest)
        marker.write_text(digest + "\n")


def has_make3d(root: Optional[str | Path]) -> bool:
    """Whether ``root`` holds Make3D images (``img-*.jpg`` anywhere below it)."""
    return root is not None and Path(root).is_dir() and any(Path(root).rglob(f"{IMAGE_PREFIX}*.jpg"))


def ensure_make3d(root: Optional[str | Path], urls: Sequence[str], sha256: Sequence[str] = (),
                  retries: int = 5, fetch: bool = False) -> Optional[Path]:
    """The Make3D folder to evaluate on (``eval.make3d_root``). When it holds no ``img-*.jpg`` yet, the archives
    of ``eval.make3d_urls`` are fetched into it only with ``fetch`` (``download.fetch: missing``); otherwise
    FileNotFoundError says what to do. Returns None when ``root`` is None (no Make3D evaluation)."""
    if root is None:
        return None
    root = Path(root)
    if has_make3d(root):
        return root
    if not fetch or not urls:
        how = ("set download.fetch: missing to fetch it from eval.make3d_urls" if urls else
               "list the Test134 archives in eval.make3d_urls and set download.fetch: missing")
        raise FileNotFoundError(f"eval.make3d_root={root} holds no Make3D Test134 images (img-*.jpg); put "
                                f"Test134 and Test134Depth there, or {how}")
    fetch_make3d(urls, root, [h or None for h in sha256], retries=retries)
    return root
