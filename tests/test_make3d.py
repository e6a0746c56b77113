"""Make3D Test134 loader, protocol (design.md §4.4) and downloader, on fixtures written in the real format."""

from __future__ import annotations

import hashlib
import http.server
import io
import math
import tarfile
import threading

import cv2
import numpy as np
import pytest
import scipy.io

from psdif.data.download import DownloadError
from psdif.data.make3d import centre_crop_2to1, fetch_make3d, load_make3d_test
from psdif.evaluation.metrics import evaluate_make3d

NAME = "10.21op2-p-139t000"


def _write_pair(root, name=NAME, grid=None, image=None, grid_key="Position3DGrid"):
    """Real Test134 layout: Test134/img-<name>.jpg (2272 rows x 1704 cols) and
    Gridlaserdata/depth_sph_corr-<name>.mat with Position3DGrid [55, 305, 4]."""
    (root / "Test134").mkdir(parents=True, exist_ok=True)
    (root / "Gridlaserdata").mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.zeros((2272, 1704, 3), np.uint8)
        image[:710] = (0, 0, 255)            # BGR red above the crop
        image[1562:] = (0, 255, 0)           # green below it
        image[710:1562] = (255, 0, 0)        # blue inside the 2:1 crop
    assert cv2.imwrite(str(root / "Test134" / f"img-{name}.jpg"), image)
    if grid is None:
        grid = np.zeros((55, 305, 4))
        grid[:, :, 3] = 10.0
    scipy.io.savemat(str(root / "Gridlaserdata" / f"depth_sph_corr-{name}.mat"), {grid_key: grid})
    return root


def test_loader_crops_2to1_rgb_and_reads_grid(tmp_path):
    root = _write_pair(tmp_path)
    _write_pair(tmp_path, name="img2")
    samples = load_make3d_test(root)
    assert [s.name for s in samples] == sorted([NAME, "img2"])
    s = next(s for s in samples if s.name == NAME)
    assert s.image.shape == (852, 1704, 3) and s.image.dtype == np.uint8      # 1704 / 2 = 852 rows
    decoded = cv2.imread(str(tmp_path / "Test134" / f"img-{NAME}.jpg"))[:, :, ::-1]
    np.testing.assert_array_equal(s.image, decoded[710:1562])                # (2272 - 852) / 2 = 710
    centre = s.image[100:-100].reshape(-1, 3).mean(axis=0)
    assert centre[2] > 200 and centre[0] < 30 and centre[1] < 30              # RGB: blue channel last
    assert s.depth_grid.shape == (55, 305) and np.all(s.depth_grid == 10.0)
    assert s.depth_path.name == f"depth_sph_corr-{NAME}.mat"


def test_centre_crop_other_sizes():
    wide = np.arange(10 * 40).reshape(10, 40)          # wider than 2:1 -> 20 centred columns
    np.testing.assert_array_equal(centre_crop_2to1(wide), wide[:, 10:30])
    tall = np.arange(31 * 20).reshape(31, 20)          # 10 rows starting at (31 - 10) // 2 = 10
    np.testing.assert_array_equal(centre_crop_2to1(tall), tall[10:20])


def test_loader_errors_name_the_file(tmp_path):
    root = _write_pair(tmp_path / "a")
    (root / "Gridlaserdata" / f"depth_sph_corr-{NAME}.mat").unlink()
    with pytest.raises(FileNotFoundError, match=f"img-{NAME}.jpg"):
        load_make3d_test(root)
    root = _write_pair(tmp_path / "b", grid_key="Other")
    with pytest.raises(ValueError, match=f"depth_sph_corr-{NAME}.mat.*Position3DGrid"):
        load_make3d_test(root)
    root = _write_pair(tmp_path / "c", grid=np.zeros((305, 55, 4)))
    with pytest.raises(ValueError, match=r"depth_sph_corr-.*\(305, 55, 4\)"):
        load_make3d_test(root)
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        load_make3d_test(tmp_path / "missing_dir")


def _sigmoid_for_depth(depth):
    return (1.0 / np.asarray(depth, np.float64) - 0.01) / 9.99


def test_make3d_protocol_hand_values(tmp_path):
    grid = np.zeros((55, 305, 4))
    grid[:, :, 3] = 1000.0                     # outside rows 17:38: would dominate every metric
    grid[17:38, :, 3] = 10.0
    grid[17:38, 0, 3] = 0.0                    # masked: gt <= 0
    grid[17:38, 1, 3] = 75.0                   # masked: gt >= 70
    root = _write_pair(tmp_path, grid=grid)
    sample = load_make3d_test(root)[0]
    # prediction at 2x the output size, constant on 2x2 blocks, so nearest resizing is unambiguous
    depth_cols = np.full(305, 5.0)
    depth_cols[2:201] = 1.0                    # 199 valid cells a row: the median, ratio = 10
    depth_cols[201:301] = 2.0                  # 100 cells -> 20 m after scaling
    depth_cols[301:305] = 8.0                  # 4 cells -> 80 m, capped at 70
    depth = np.repeat(np.repeat(np.tile(depth_cols, (21, 1)), 2, axis=0), 2, axis=1)
    assert depth.shape == (42, 610)
    e = evaluate_make3d(_sigmoid_for_depth(depth).astype(np.float32), sample.depth_grid)
    n = 303
    assert e["ratio"] == pytest.approx(10.0, rel=1e-5)
    assert e["abs_rel"] == pytest.approx((100 * 1 + 4 * 6) / n, rel=1e-5)
    assert e["sq_rel"] == pytest.approx((100 * 100 / 10 + 4 * 60 ** 2 / 10) / n, rel=1e-5)
    assert e["rmse"] == pytest.approx(math.sqrt((100 * 100 + 4 * 60 ** 2) / n), rel=1e-5)
    assert e["rmse_log"] == pytest.approx(
        math.sqrt((100 * math.log10(2) ** 2 + 4 * math.log10(7) ** 2) / n), rel=1e-5)
    assert e["log10"] == pytest.approx((100 * math.log10(2) + 4 * math.log10(7)) / n, rel=1e-5)
    # the full [55, 305, 4] grid gives the same numbers as its depth channel
    assert evaluate_make3d(_sigmoid_for_depth(depth).astype(np.float32), grid) == e


# ------------------------------------------------------------------------------------------ downloader

def _tar_bytes():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("Test134/img-a.jpg", b"x" * 5000), ("Gridlaserdata/depth_sph_corr-a.mat",
                                                               bytes(range(256)) * 40)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _RangeServer:
    """127.0.0.1 HTTP server for one payload that honours ``Range: bytes=N-`` and can fail first."""

    def __init__(self, payload: bytes, fail_first: int = 0):
        self.payload, self.fail_left, self.ranges = payload, fail_first, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_error(503)
                    return
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/Test134.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_fetch_resumes_verifies_and_extracts(tmp_path):
    payload = _tar_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "make3d"
    (dest / "archives").mkdir(parents=True)
    half = len(payload) // 2
    (dest / "archives" / "Test134.tar.gz.part").write_bytes(payload[:half])   # an interrupted download
    with _RangeServer(payload, fail_first=1) as server:                       # plus one transient 503
        fetch_make3d([server.url], dest, sha256=[digest], retries=2, backoff=0.0)
        assert server.ranges == [f"bytes={half}-"]
    assert (dest / "archives" / "Test134.tar.gz").read_bytes() == payload
    assert (dest / "Test134" / "img-a.jpg").read_bytes() == b"x" * 5000
    assert (dest / "Gridlaserdata" / "depth_sph_corr-a.mat").stat().st_size == 256 * 40


def test_fetch_rejects_wrong_hash(tmp_path):
    payload = _tar_bytes()
    with _RangeServer(payload) as server:
        with pytest.raises(DownloadError, match="Test134.tar.gz.*does not match"):
            fetch_make3d([server.url], tmp_path, sha256=["0" * 64], retries=0)
    assert not (tmp_path / "archives" / "Test134.tar.gz").exists()
    assert not (tmp_path / "Test134").exists()


def test_ensure_make3d_uses_existing_data_or_says_what_to_do(tmp_path):
    from psdif.data.make3d import ensure_make3d

    assert ensure_make3d(None, []) is None
    root = _write_pair(tmp_path / "have")
    assert ensure_make3d(root, ["http://127.0.0.1:9/never-contacted.tar.gz"]) == root
    with pytest.raises(FileNotFoundError, match="eval.make3d_urls"):
        ensure_make3d(tmp_path / "empty", [])


def test_params_reject_unmatched_hash_pins():
    import dataclasses

    from psdif.config import EvalConfig, ParamsError, default_params

    cfg = dataclasses.asdict(default_params().eval)
    cfg.update(make3d_urls=["http://a/x.tar.gz", "http://a/y.tar.gz"], make3d_sha256=["0" * 64])
    with pytest.raises(ParamsError, match="eval.make3d_sha256"):
        EvalConfig(**cfg)


def _stage_module(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "stages" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_stage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unreachable_make3d_is_a_warning_and_evaluate_says_why(tmp_path, monkeypatch, capsys):
    """eval.make3d_urls on a port nobody listens on, download.fetch: missing: the download stage warns and
    records why (no error: Make3D is optional), and the evaluate stages give that reason as Make3D's "not run"
    (what Table 2 prints); a 404 is the same, at once."""
    import dataclasses
    import socket

    from psdif.config import default_params
    from psdif.data.ondisk import ContentState
    from psdif.io import write_json

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/Test134.tar.gz"
    p = default_params()
    p = dataclasses.replace(p, eval=dataclasses.replace(p.eval, make3d_root=str(tmp_path / "make3d"),
                                                        make3d_urls=[url], make3d_sha256=[]),
                            download=dataclasses.replace(p.download, fetch="missing", retries=0))
    monkeypatch.chdir(tmp_path)
    record = _stage_module("download").make3d_record(p, ContentState(tmp_path / "state.json", progress=False))
    assert record["status"] == "unreachable" and url in record["why"] and "refused" in record["why"], record
    err = capsys.readouterr().err
    assert err.startswith("warning: Make3D (Table 2) will not run: eval.make3d_urls could not be fetched: ") and \
        url in err and "partial file" not in err, err
    write_json(tmp_path / "data/manifests/raw_test.json", {"make3d": record})
    root, why = _stage_module("evaluate").make3d_source(p)
    assert root is None and why == f"the download stage could not fetch eval.make3d_urls ({record['why']})"
