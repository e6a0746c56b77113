"""psdif.evaluation.photometric: the score without depth GT on a scene rendered by exact projection (a textured
fronto-parallel plane, a camera translating along x), with stand-in networks that return the known depth and
pose; a numpy brute-force reference of the whole score; the auto-mask on static frames; the depth video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from psdif.data.kitti import FrameRef, image_path
from psdif.data.images import write_png
from psdif.evaluation.photometric import evaluate_photometric, photometric_score, write_depth_video

H, W = 48, 64
FX = 50.0                       # px at H x W; cx, cy at the image centre
Z = 5.0                         # plane depth, metres
MIN_DEPTH, MAX_DEPTH = 0.1, 100.0
DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"


def intrinsics(scale: float = 1.0) -> np.ndarray:
    h, w = H * scale, W * scale
    return np.array([[FX * scale, 0, (w - 1) / 2], [0, FX * scale, (h - 1) / 2], [0, 0, 1]])


def render(camera_x: float, scale: float = 1.0, monotone: bool = False) -> np.ndarray:
    """The plane Z = 5 m seen from a camera at (camera_x, 0, 0) looking down +Z: uint8 [H, W, 3] (x scale).

    Texture (plane metres X, Y): crossed sinusoids of periods 1.3 m / 1.1 m (13 / 11 px at H x W), or with
    ``monotone`` every channel strictly increasing in X (a ramp with a small ripple), so a view off by more
    pixels is off by more grey levels: no ties between warped and identity errors, even in uint8."""
    K = intrinsics(scale)
    v, u = np.mgrid[0:round(H * scale), 0:round(W * scale)].astype(np.float64)
    X = camera_x + Z * (u - K[0, 2]) / K[0, 0]
    Y = Z * (v - K[1, 2]) / K[1, 1]
    if monotone:      # d/dX >= 0.08 - 0.03: at least 1.3 grey levels a pixel; no clipping
        channels = [0.45 + 0.08 * X + 0.01 * np.sin(2 * np.pi * X / 2.1 + c) + 0.06 * np.cos(2 * np.pi * Y / 1.7 + c)
                    for c in (0.0, 1.0, 2.0)]
    else:
        channels = [0.5 + 0.3 * np.sin(2 * np.pi * X / 1.3 + c) * np.cos(2 * np.pi * Y / 1.1 + c)
                    for c in (0.0, 1.0, 2.0)]
    return np.round(np.stack(channels, -1) * 255).astype(np.uint8)


def baseline_for(disparity_px: float) -> float:
    """Camera step (metres) that moves the plane by ``disparity_px`` pixels at H x W."""
    return disparity_px * Z / FX


class PlaneDepth(nn.Module):
    """Stand-in depth net: the sigmoid whose depth (model range 0.1-100 m) is ``depth`` everywhere."""

    def __init__(self, depth: float):
        super().__init__()
        self.sigmoid = (1 / depth - 1 / MAX_DEPTH) / (1 / MIN_DEPTH - 1 / MAX_DEPTH)

    def forward_depth(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full_like(images[:, :1], self.sigmoid)


class StepPose(nn.Module):
    """Stand-in pose net: every pair (earlier, later) is the camera moving ``step`` metres along +x, i.e. the
    later camera sees points at X - step: translation (-step, 0, 0), no rotation."""

    def __init__(self, step: float):
        super().__init__()
        self.step = step

    def forward(self, pair: torch.Tensor):
        translation = torch.zeros(pair.shape[0], 1, 3, dtype=pair.dtype, device=pair.device)
        translation[..., 0] = -self.step
        return torch.zeros_like(translation), translation


def triplet(step: float, monotone: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(t, t-1, t+1) at camera x = 0, -step, +step, and K."""
    return np.stack([render(x, monotone=monotone) for x in (0.0, -step, step)]), intrinsics()


def brute_force_l1(frames: np.ndarray, shift: int) -> dict:
    """The score with alpha = 0 (pure L1) by hand: a model that moves the plane by an integer ``shift`` px
    samples t+1 at u - shift and t-1 at u + shift (clamped at the border, as the warp's border padding)."""
    img = frames.astype(np.float64) / 255
    target, prev, nxt = img
    u = np.arange(W)
    warped = [prev[:, np.clip(u + shift, 0, W - 1)], nxt[:, np.clip(u - shift, 0, W - 1)]]
    err = np.minimum(*[np.abs(w - target).mean(-1) for w in warped])
    identity = np.minimum(np.abs(prev - target).mean(-1), np.abs(nxt - target).mean(-1))
    kept = err < identity
    return {"photo_err": err[kept].mean() if kept.any() else identity.mean(), "photo_err_all": err.mean(),
            "photo_err_identity": identity.mean(), "photo_mask_fraction": kept.mean()}


def score(frames, K, depth, step, **kw):
    return photometric_score(PlaneDepth(depth), StepPose(step), [(frames, K)], MIN_DEPTH, MAX_DEPTH, **kw)


# ------------------------------------------------------------------------------------------------ score

@pytest.mark.parametrize("depth, direction, shift", [(Z, 1, 4), (2 * Z, 1, 2), (4 * Z / 3, 1, 3), (Z, -1, -4)])
def test_score_matches_brute_force_l1(depth, direction, shift):
    """The plane moves 4 px between frames. The true depth and pose (the warp moves 4 px), 2x depth (2 px), 4/3
    depth (3 px), and the true depth with the motion reversed (-4 px: every warp is worse than no warp, or tied
    with it at the border, so no pixel is kept and photo_err is the identity error)."""
    frames, K = triplet(baseline_for(4), monotone=True)
    got = score(frames, K, depth, direction * baseline_for(4), alpha=0.0)
    ref = brute_force_l1(frames, shift)
    assert got["n_images"] == 1
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    if shift == 4:
        assert got["photo_mask_fraction"] == 1.0 and got["photo_err_all"] < 1e-3
    if shift == -4:
        assert ref["photo_mask_fraction"] == 0.0 and got["photo_err"] > 0.01


def test_true_depth_and_pose_score_near_zero_and_wrong_scale_does_not():
    """Eq. 15 with alpha = 0.85 and a sub-pixel motion (3.3 px): near zero with the true depth and pose, far
    below the identity error; twice the depth with the same pose (warp off by 1.65 px) is clearly worse."""
    step = baseline_for(3.3)
    frames, K = triplet(step)
    true = score(frames, K, Z, step)
    wrong = score(frames, K, 2 * Z, step)
    assert true["photo_err"] < 0.01 and true["photo_err_all"] < 0.01
    assert true["photo_err_all"] < 0.1 * true["photo_err_identity"]
    assert true["photo_mask_fraction"] > 0.98
    assert wrong["photo_err"] > 5 * true["photo_err"] and wrong["photo_err_all"] > 5 * true["photo_err_all"]
    assert wrong["photo_err_identity"] == true["photo_err_identity"]      # the reference does not see the model


def test_batches_and_images_pool_pixels():
    """Three triplets in batches of 2 give the pixel-pooled means of scoring each alone."""
    frames, K = triplet(baseline_for(4), monotone=True)
    static = np.stack([render(0.0, monotone=True)] * 3)
    items = [(frames, K), (static, K), (frames, K)]
    got = photometric_score(PlaneDepth(2 * Z), StepPose(baseline_for(4)), items, MIN_DEPTH, MAX_DEPTH,
                            alpha=0.0, batch_size=2)
    one = [brute_force_l1(f, 2) for f, _ in items]
    assert got["n_images"] == 3
    kept = np.array([o["photo_mask_fraction"] for o in one])
    assert got["photo_mask_fraction"] == pytest.approx(kept.mean(), abs=1e-9)
    assert got["photo_err"] == pytest.approx(sum(o["photo_err"] * k for o, k in zip(one, kept) if k) / kept.sum(),
                                             abs=1e-6)
    assert got["photo_err_identity"] == pytest.approx(np.mean([o["photo_err_identity"] for o in one]), abs=1e-6)


def test_static_frames_keep_no_pixel_and_report_the_identity_error():
    """All three frames identical: the unwarped sources match exactly (identity error 0), so the auto-mask
    keeps no pixel (fraction 0) whatever the model predicts, and photo_err is then the identity error (0),
    not NaN; the unmasked warped error shows what the (wrong) motion costs."""
    frames = np.stack([render(0.0)] * 3)
    got = score(frames, intrinsics(), Z, baseline_for(4))
    assert got["photo_err_identity"] == 0.0
    assert got["photo_mask_fraction"] == 0.0
    assert got["photo_err"] == 0.0
    assert got["photo_err_all"] > 0.01
    assert all(isinstance(v, (int, float)) for v in got.values())


def test_no_triplet_is_an_error():
    with pytest.raises(ValueError, match="no frame triplet"):
        photometric_score(PlaneDepth(Z), StepPose(0.1), [], MIN_DEPTH, MAX_DEPTH)


# ------------------------------------------------------------------------------------------ frames on disk

def write_drive(root, fx_native: float, n_frames: int = 4, step: float = baseline_for(3.3)) -> list[FrameRef]:
    """A drive of ``n_frames`` rendered at 2x the network size (camera i at x = i * step) and its calibration
    file (P_rect_02 with ``fx_native``); returns the frames' refs."""
    K = intrinsics(2.0)
    K[0, 0] = K[1, 1] = fx_native
    P = np.hstack([K, np.zeros((3, 1))])
    (root / "2011_09_26").mkdir(parents=True)
    (root / "2011_09_26" / "calib_cam_to_cam.txt").write_text(
        f"S_rect_02: {2 * W} {2 * H}\nP_rect_02: {' '.join(map(str, P.ravel()))}\n")
    refs = [FrameRef(DRIVE, i, "l") for i in range(n_frames)]
    for i, ref in enumerate(refs):
        write_png(image_path(root, ref), render(i * step, scale=2.0))
    return refs


def test_frames_on_disk_use_the_drive_calibration_and_skip_the_ends(tmp_path):
    """The images on disk are twice the network size; K comes from the drive's calib_cam_to_cam.txt scaled to
    the network size as in training. The first and last frame lack a neighbour: skipped and counted."""
    step = baseline_for(3.3)
    net = dict(img_ext="png", height=H, width=W, min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
    refs = write_drive(tmp_path / "good", 2 * FX)
    good = evaluate_photometric(PlaneDepth(Z), StepPose(step), tmp_path / "good", refs, **net, batch_size=1)
    assert (good["n_images"], good["n_skipped"]) == (2, 2)
    assert good["photo_err_all"] < 0.02 and good["photo_err_all"] < 0.15 * good["photo_err_identity"]
    # the same frames with a calibration whose focal length is twice the truth: the warp moves 2x too far
    refs = write_drive(tmp_path / "bad", 4 * FX)
    bad = evaluate_photometric(PlaneDepth(Z), StepPose(step), tmp_path / "bad", refs, **net)
    assert bad["photo_err_all"] > 4 * good["photo_err_all"]
    assert bad["photo_err_identity"] == pytest.approx(good["photo_err_identity"], abs=1e-9)
    # a callable K (pixels of the image on disk) is scaled the same way
    called = []

    def true_K(ref, image_hw):
        called.append((ref.frame, image_hw))
        return intrinsics(2.0)

    by_callable = evaluate_photometric(PlaneDepth(Z), StepPose(step), tmp_path / "bad", refs, **net,
                                       intrinsics=true_K)
    assert called == [(1, (2 * H, 2 * W)), (2, (2 * H, 2 * W))]
    for key in ("photo_err", "photo_err_all", "photo_mask_fraction"):
        assert by_callable[key] == pytest.approx(good[key], abs=1e-6), key


def test_missing_target_frame_is_named(tmp_path):
    refs = write_drive(tmp_path, 2 * FX, n_frames=3)
    missing = FrameRef(DRIVE, 7, "l")
    with pytest.raises(FileNotFoundError, match=f"{DRIVE} 7 l"):
        evaluate_photometric(PlaneDepth(Z), StepPose(0.1), tmp_path, [refs[1], missing], "png", H, W,
                             MIN_DEPTH, MAX_DEPTH)


# ------------------------------------------------------------------------------------------------ video

def test_depth_video_frames_side_by_side(tmp_path):
    """5 frames of 64 x 48 -> 5 frames of 128 x 48: the image on the left, the depth on the right, near bright."""
    rgb = [render(0.5 * i, monotone=True) for i in range(5)]                # smooth: little codec loss
    depth = np.full((H, W), 20.0)
    depth[:, : W // 2] = 2.0                                          # left half near
    out = write_depth_video(tmp_path / "out" / "clip.mp4", rgb, [depth] * 5, fps=10)
    assert out == tmp_path / "out" / "clip.mp4"
    assert [p.name for p in out.parent.iterdir()] == ["clip.mp4"]      # no temporary file left
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) == 5
    assert frames[0].shape == (H, 2 * W, 3)
    error = [np.abs(frames[0][:, :W].astype(float) - im).mean() for im in rgb]      # the image, up to the codec,
    assert error[0] < 5 and error[0] < 0.5 * min(error[1:])                          # in its place
    right = frames[2][:, W:].astype(float).mean(-1)
    assert right[:, 4: W // 2 - 4].mean() > right[:, W // 2 + 4: -4].mean() + 100


def test_depth_video_errors(tmp_path, monkeypatch):
    rgb, depth = [render(0.0)], [np.ones((H, W))]
    with pytest.raises(ValueError, match="1 frames and 2 depth maps"):
        write_depth_video(tmp_path / "a.mp4", rgb, depth * 2, fps=10)
    with pytest.raises(ValueError, match="frame 0"):
        write_depth_video(tmp_path / "a.mp4", rgb, [np.ones((H, W + 1))], fps=10)

    class ClosedWriter:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", ClosedWriter)
    with pytest.raises(RuntimeError, match="a.mp4: OpenCV cannot open an mp4v video writer"):
        write_depth_video(tmp_path / "a.mp4", rgb, depth, fps=10)
    assert not list(tmp_path.iterdir())
