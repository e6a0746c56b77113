"""psdif.geometry against hand computations, scipy and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from psdif.geometry import (backproject, disp_to_depth, intrinsics_pyramid, project, project_to_pixels,
                            rot_from_axisangle, scale_intrinsics, transformation_from_parameters, warp)


def make_K(batch: int, height: int, width: int, dtype=torch.float32) -> torch.Tensor:
    """KITTI's normalised intrinsics (design.md §4.2) scaled to pixels, ``[B, 4, 4]``."""
    K = torch.tensor([[0.58 * width, 0, 0.5 * width, 0], [0, 1.92 * height, 0.5 * height, 0],
                      [0, 0, 1, 0], [0, 0, 0, 1]], dtype=dtype)
    return K.expand(batch, 4, 4).clone()


def translation_pose(batch: int, tx: float, ty: float = 0.0, tz: float = 0.0) -> torch.Tensor:
    T = torch.eye(4).repeat(batch, 1, 1)
    T[:, :3, 3] = torch.tensor([tx, ty, tz])
    return T


# ----------------------------------------------------------------------------------------------- rotation

def test_rotation_matches_scipy_rotvec():
    gen = torch.Generator().manual_seed(0)
    vec = torch.randn(16, 1, 3, generator=gen, dtype=torch.float64)
    vec[0] = 0.0                                    # zero rotation
    vec[1] *= 1e-4                                  # tiny angle (PoseNet outputs are ~1e-2)
    vec[2] = vec[2] / vec[2].norm() * 3.0           # large angle
    rot = rot_from_axisangle(vec)
    ref = Rotation.from_rotvec(vec[:, 0].numpy()).as_matrix()
    np.testing.assert_allclose(rot[:, :3, :3].numpy(), ref, atol=1e-9)
    np.testing.assert_array_equal(rot[:, 3].numpy(), np.tile([0, 0, 0, 1], (16, 1)))
    np.testing.assert_array_equal(rot[:, :3, 3].numpy(), 0)


def test_rotation_by_hand_quarter_turn_about_z_and_x():
    vec = torch.tensor([[[0.0, 0.0, math.pi / 2]], [[math.pi / 2, 0.0, 0.0]]], dtype=torch.float64)
    rot = rot_from_axisangle(vec)[:, :3, :3].numpy()
    np.testing.assert_allclose(rot[0], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(rot[1], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)


def test_rotation_gradient_finite_at_zero():
    vec = torch.zeros(2, 1, 3, requires_grad=True)
    rot_from_axisangle(vec).sum().backward()
    assert torch.isfinite(vec.grad).all()


def test_transformation_is_T_times_R_and_invert_is_its_inverse():
    gen = torch.Generator().manual_seed(1)
    axisangle = 0.3 * torch.randn(5, 1, 3, generator=gen, dtype=torch.float64)
    translation = torch.randn(5, 1, 3, generator=gen, dtype=torch.float64)
    M = transformation_from_parameters(axisangle, translation)
    M_inv = transformation_from_parameters(axisangle, translation, invert=True)
    R = Rotation.from_rotvec(axisangle[:, 0].numpy()).as_matrix()
    np.testing.assert_allclose(M[:, :3, :3].numpy(), R, atol=1e-12)           # M = T(t) R: rotation block
    np.testing.assert_allclose(M[:, :3, 3].numpy(), translation[:, 0].numpy(), atol=1e-12)  # and t
    eye = np.tile(np.eye(4), (5, 1, 1))
    np.testing.assert_allclose((M_inv @ M).numpy(), eye, atol=1e-12)
    np.testing.assert_allclose((M @ M_inv).numpy(), eye, atol=1e-12)
    # inverse = R^T (x - t): check on a point
    x = torch.tensor([1.0, -2.0, 3.0, 1.0], dtype=torch.float64)
    expected = np.einsum("bji,bj->bi", R, x[:3].numpy() - translation[:, 0].numpy())
    np.testing.assert_allclose((M_inv @ x)[:, :3].numpy(), expected, atol=1e-12)


def test_transformation_accepts_flat_vectors():
    a, t = torch.randn(3, 3), torch.randn(3, 3)
    torch.testing.assert_close(transformation_from_parameters(a, t), transformation_from_parameters(a[:, None], t[:, None]))


# -------------------------------------------------------------------------------------------- intrinsics

def test_scale_intrinsics_and_pyramid():
    K = make_K(2, 64, 224)
    K2 = scale_intrinsics(K, 0.25, 0.5)
    assert K2[0, 0, 0] == pytest.approx(0.58 * 224 / 4) and K2[0, 0, 2] == pytest.approx(0.5 * 224 / 4)
    assert K2[0, 1, 1] == pytest.approx(1.92 * 64 / 2) and K2[0, 1, 2] == pytest.approx(0.5 * 64 / 2)
    assert K2[0, 2, 2] == 1 and K2[0, 3, 3] == 1
    ks, inv_ks = intrinsics_pyramid(K, 4)
    assert len(ks) == 4 and len(inv_ks) == 4
    for s, (k, ik) in enumerate(zip(ks, inv_ks)):
        assert k[1, 0, 0] == pytest.approx(0.58 * 224 / 2 ** s)
        torch.testing.assert_close(k @ ik, torch.eye(4).expand(2, 4, 4), atol=1e-5, rtol=0)


def test_disp_to_depth_range():
    disp = torch.tensor([0.0, 1.0, 0.5])
    scaled, depth = disp_to_depth(disp, 0.1, 100.0)
    torch.testing.assert_close(depth[:2], torch.tensor([100.0, 0.1]))
    assert scaled[2].item() == pytest.approx(0.01 + 0.5 * (10 - 0.01))
    torch.testing.assert_close(depth * scaled, torch.ones(3))


# ----------------------------------------------------------------------------------- projection and warp

def test_backproject_and_project_by_hand():
    h, w = 4, 6
    K = make_K(1, h, w)
    fx, fy, cx, cy = K[0, 0, 0].item(), K[0, 1, 1].item(), K[0, 0, 2].item(), K[0, 1, 2].item()
    depth = torch.arange(1.0, 1.0 + h * w).reshape(1, 1, h, w)
    points = backproject(depth, torch.linalg.inv(K))
    assert points.shape == (1, 4, h * w)
    v, u = 2, 5
    d = depth[0, 0, v, u].item()
    np.testing.assert_allclose(points[0, :, v * w + u].numpy(),
                               [(u - cx) / fx * d, (v - cy) / fy * d, d, 1.0], rtol=1e-6)
    # a 1 m shift along x moves pixel u by fx / d; normalised with align_corners=True
    grid = project(points, K, translation_pose(1, 1.0), h, w)
    assert grid.shape == (1, h, w, 2)
    u_s = u + fx / d
    assert grid[0, v, u, 0].item() == pytest.approx(2 * u_s / (w - 1) - 1, rel=1e-5)
    assert grid[0, v, u, 1].item() == pytest.approx(2 * v / (h - 1) - 1, abs=1e-5)
    pix, z = project_to_pixels(points, K, translation_pose(1, 0.0, 0.0, 2.0))
    assert z[0, 0, v * w + u].item() == pytest.approx(d + 2.0)


@pytest.mark.parametrize("batch,h,w", [(1, 8, 12), (3, 16, 24)])
def test_warp_identity_pose_returns_image(batch, h, w):
    gen = torch.Generator().manual_seed(2)
    src = torch.rand(batch, 3, h, w, generator=gen)
    depth = 1.0 + 20 * torch.rand(batch, 1, h, w, generator=gen)
    K = make_K(batch, h, w)
    out, grid = warp(src, depth, torch.eye(4).expand(batch, 4, 4), K, torch.linalg.inv(K), return_grid=True)
    assert out.shape == src.shape and grid.shape == (batch, h, w, 2)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], src[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_warp_translation_on_fronto_parallel_plane_shifts_by_disparity():
    """Plane at Z = 10 m, camera moved 0.5 m along x: the source is sampled fx * tx / Z pixels right."""
    b, h, w, depth_m = 2, 10, 40, 10.0
    K = make_K(b, h, w)                                    # fx = 0.58 * 40 = 23.2 px
    fx = K[0, 0, 0].item()
    tx = 2.5 * depth_m / fx                                # 2.5 px of disparity
    u = torch.arange(w, dtype=torch.float32)
    v = torch.arange(h, dtype=torch.float32)
    ramp = (0.01 * u[None, :] + 0.002 * v[:, None]).expand(b, 1, h, w)   # bilinear sampling is exact on a ramp
    depth = torch.full((b, 1, h, w), depth_m)
    out = warp(ramp, depth, translation_pose(b, tx), K, torch.linalg.inv(K))
    expected = 0.01 * (u + 2.5)[None, :] + 0.002 * v[:, None]
    inside = u + 2.5 <= w - 1
    torch.testing.assert_close(out[:, 0][..., inside], expected.expand(b, h, w)[..., inside], atol=1e-5, rtol=0)
    # beyond the right edge: border padding repeats the last column
    torch.testing.assert_close(out[:, 0][..., ~inside], ramp[:, 0, :, -1:].expand(b, h, int((~inside).sum())),
                               atol=1e-5, rtol=0)
    # an integer shift (3 px) moves any image, also with nearest sampling
    gen = torch.Generator().manual_seed(3)
    img = torch.rand(b, 3, h, w, generator=gen)
    for mode in ("bilinear", "nearest"):
        out = warp(img, depth, translation_pose(b, 3.0 * depth_m / fx), K, torch.linalg.inv(K), mode=mode)
        torch.testing.assert_close(out[..., : w - 3], img[..., 3:], atol=1e-4, rtol=0)


def test_geometry_traces_without_graph_breaks():
    """No host sync / value-dependent branch: dynamo captures warp in one graph."""
    torch._dynamo.reset()
    fn = torch.compile(lambda a, t, s, d, K: warp(s, d, transformation_from_parameters(a, t, invert=True),
                                                  K, torch.linalg.inv(K)), backend="eager", fullgraph=True)
    b, h, w = 2, 8, 16
    out = fn(torch.zeros(b, 1, 3), torch.zeros(b, 1, 3), torch.rand(b, 3, h, w), torch.ones(b, 1, h, w),
             make_K(b, h, w))
    assert out.shape == (b, 3, h, w)
