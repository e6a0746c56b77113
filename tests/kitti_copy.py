"""Helpers of the real-KITTI tests: a user's local copy of the sample (read-only), projects in temporary
folders configured from the paper preset, stage runs with the network disabled, and a local HTTP server
that serves KITTI archives (a drive zip and its date's calibration zip built from the sample)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
NETGUARD = Path(__file__).resolve().parent / "netguard"
DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"


# ------------------------------------------------------------------------------------------ the user's copy

def read_only_copy(sample: Path, dest: Path) -> Path:
    """Copy the KITTI sample to ``dest`` and make it read-only (files and folders): a write fails loudly."""
    shutil.copytree(sample / "2011_09_26", dest / "2011_09_26")
    for p in sorted(dest.rglob("*"), reverse=True) + [dest]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return dest


def make_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: (kind, size, mtime, SHA-256 of files)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, digest)
    return out


# ------------------------------------------------------------------------------------------ projects

def paper_params(**sections) -> dict:
    """The paper preset with ``sections`` merged in ({"data": {...}, ...})."""
    raw = yaml.safe_load((REPO / "psdif/presets/paper.yaml").read_text())
    for name, values in sections.items():
        raw[name].update(values)
    return raw


def write_lists(folder: Path, **lists: list[str]) -> None:
    """``train=[...]``, ``val=[...]``, ``test=[...]`` -> ``folder/{role}_files.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, lines in lists.items():
        (folder / f"{role}_files.txt").write_text("".join(line + "\n" for line in lines))


def env(net_log: Path | None = None, loopback: bool = False) -> dict:
    """The environment of a stage run: psdif from this checkout, the network guard, no terminal."""
    out = dict(os.environ, PYTHONPATH=os.pathsep.join([str(NETGUARD), str(REPO)]), DVC_NO_ANALYTICS="1",
               OMP_NUM_THREADS="1", CI="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    out.pop("PSDIF_NPROC", None)
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        out.pop(key, None)
    if net_log is not None:
        out["PSDIF_NET_LOG"] = str(net_log)
    if loopback:
        out["PSDIF_NET_ALLOW"] = "loopback"
    return out


def run_stage(name: str, project: Path, *args: str, net_log: Path | None = None, loopback: bool = False,
              check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python stages/<name>.py`` of this checkout, in ``project`` (its params.yaml, its data/)."""
    r = subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py"), *args], cwd=project,
                       env=env(net_log, loopback), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"stages/{name}.py failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


# ------------------------------------------------------------------------------------------ archives

def kitti_archives(sample: Path) -> dict[str, bytes]:
    """URL path (below the server's /raw_data) -> zip bytes, in KITTI's archive layout."""
    def zipped(files: list[Path]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for f in files:
                zf.write(f, str(f.relative_to(sample)))
        return buf.getvalue()

    date = sample / "2011_09_26"
    return {"/raw_data/2011_09_26_calib.zip": zipped(sorted(date.glob("calib_*.txt"))),
            "/raw_data/2011_09_26_drive_0001/2011_09_26_drive_0001_sync.zip":
                zipped(sorted(p for p in (sample / DRIVE).rglob("*") if p.is_file()))}


class ArchiveServer:
    """Serves ``files`` on 127.0.0.1 with HTTP Range; ``throttle`` seconds between 64 kB chunks; records the
    requests as (path, first byte)."""

    def __init__(self, files: dict[str, bytes]):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(rng.split("=")[1].split("-")[0])
                server.requests.append((self.path, start))
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                try:
                    for i in range(start, len(body), 1 << 16):
                        self.wfile.write(body[i:i + (1 << 16)])
                        if server.throttle:
                            time.sleep(server.throttle)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.files, self.requests, self.throttle = files, [], 0.0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/raw_data"

    def __enter__(self) -> "ArchiveServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
