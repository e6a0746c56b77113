"""Time B_t extraction (psdif.semantics.boundary) on KITTI-size label maps, one CPU thread.

    python bench/boundary_speed.py [--height 375 --width 1242 --frames 20 --z 5 --t 10]

Label maps are piecewise-constant (19 classes on 16x16-pixel cells, then smoothed by a random shift),
like a segmentation output. Prints frames/s per core for the numpy (box filter) and torch versions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from psdif.semantics.boundary import boundary_mask, boundary_mask_torch  # noqa: E402


def label_maps(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 19, (n, h // 16 + 2, w // 16 + 2))
    maps = np.kron(cells, np.ones((1, 16, 16), np.int64))
    return np.stack([m[s: s + h, s: s + w] for m, s in zip(maps, rng.integers(0, 16, n))]).astype(np.uint8)


def timed(fn, items) -> float:
    fn(items[0])  # warm-up
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--width", type=int, default=1242)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--z", type=int, default=5)
    ap.add_argument("--t", type=int, default=10)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    maps = label_maps(a.frames, a.height, a.width)
    fps_np = timed(lambda m: boundary_mask(m, a.z, a.t), maps)
    fps_torch = timed(lambda m: boundary_mask_torch(torch.from_numpy(m), a.z, a.t), maps)
    batch = torch.from_numpy(maps[:8])
    fps_torch_b = 8 * timed(lambda b: boundary_mask_torch(b, a.z, a.t), [batch] * 3)
    print(f"{a.height}x{a.width}, Z={a.z}, T={a.t}, 1 thread: numpy {fps_np:.1f} frames/s, "
          f"torch {fps_torch:.1f} frames/s, torch batch 8 {fps_torch_b:.1f} frames/s")


if __name__ == "__main__":
    main()
