"""The mini-KITTI generator: procedural street drives written in the exact KITTI raw layout (the embedded default's data).

Procedural mini-KITTI: street scenes ray-cast in numpy, written in the exact KITTI raw layout.

The embedded default's "download" (design.md §1, §4.1, §6). One code path then serves real and generated data.

Scene (world frame: x along the street, y to the left, z up, ground z = 0): road with lane markings and a
crosswalk, sidewalks (paving slabs), lawns (terrain) with fences and hedges, buildings (axis-aligned boxes
with window grids, brick or plaster), parked cars (body + cabin boxes), poles with lamp arms, traffic
signs and a traffic light, trees (cylinder trunk + sphere crown), sky. Every primitive is an axis-aligned
box, a sphere or a vertical cylinder, intersected analytically and vectorised over the rays of its
screen-space (or velodyne-grid) bounding rectangle. Anti-aliasing: textures (band-limited periodic noise
tiles, trilinear mip levels; analytically box-filtered markings, windows, bricks, slab seams, cell tones)
are prefiltered over TEXTURE_BLUR output pixels with a per-axis footprint (grazing surfaces blur along
the view), and geometry gets ``supersample``² samples on the pixels that need them (object boundaries,
sub-pixel-thin objects); other pixels are shaded once at their centre. So the true-pose warp of a frame
reproduces its neighbour (tests/test_synthetic.py: ratio ~0.1 of the unwarped photometric error).

Rig (KITTI-like): rectified cam0 at 1.65 m; cam2 0.06 m to its left, cam3 0.48 m to its right (baseline
0.54 m); velodyne 0.27 m behind and 0.08 m above cam0; IMU 0.93 m above the ground. Intrinsics are the
Monodepth2 normalised K: ``fx = 0.58 W``, ``fy = 1.92 H``, ``cx = W/2``, ``cy = H/2`` (pixel centres at
integer coordinates, as Monodepth2's back-projection assumes); ``R_rect_00 = I``.

Motion: 10 Hz; cruise 6-11 m/s with gentle lane-weave turns; every drive stops once at a crosswalk for
several frames with speed exactly 0 (identical poses). Moving frames never go below ``V_CREEP`` m/s, so
an OXTS speed threshold below it separates exactly the stationary frames.

Written per generation (``root`` = ``data.raw_root``)::

    <root>/2030_01_01/calib_{cam_to_cam,velo_to_cam,imu_to_velo}.txt
    <root>/2030_01_01/2030_01_01_drive_NNNN_sync/{image_02,image_03}/data/%010d.png, timestamps.txt
    <root>/2030_01_01/2030_01_01_drive_NNNN_sync/oxts/{data/%010d.txt, dataformat.txt, timestamps.txt}
    <root>/2030_01_01/2030_01_01_drive_NNNN_sync/velodyne_points/{data/%010d.bin, timestamps*.txt}
    <root>/synthetic_gt/2030_01_01_drive_NNNN_sync/{depth,semantic}_0{2,3}/%010d.png
        depth: uint16 PNG, metres x 256 (0 = sky or beyond 255 m); semantic: uint8 Cityscapes train ids
    <root>/synthetic_gt/2030_01_01_drive_NNNN_sync/poses.txt       cam2-to-world [3, 4] per line
    <root>/synthetic_gt/2030_01_01_drive_NNNN_sync/stationary.txt  frame indices with zero speed
    <root>/synthetic_gt/manifest.json                              written last (params + code hash, MD5s)
    <splits_dir>/synthetic_drives.txt          "<date>/<drive> train|val|test"
    <splits_dir>/.synthetic_lists.json         MD5 of each list written (an edited list is refused)
    <splits_dir>/synth_eigen/test_files.txt    "<date>/<drive> <frame> l" (moving test frames)
    <splits_dir>/synth_zhou/{train,val}_files.txt  every frame with both neighbours of the train / val drives,
                                               both cameras, static frames included (the filter removes them)

Note (KITTI convention): ``psdif.data.kitti.generate_depth_map`` stores a point projected at pixel coordinate
``x`` in column ``round(x) - 1``; with integer pixel centres, the velodyne GT is therefore one pixel up
and left of the dense GT, exactly as on real KITTI with its 0-based P_rect.

Modules, in the order a frame is made: ``rig`` (cameras, calibration, trajectory, OXTS), ``scene`` (primitives,
materials, textures), ``raycast`` (intersections), ``shading`` (anti-aliased surface colours and classes),
``render`` (one frame: images, depth, labels, velodyne), ``writer`` (drives, split lists, ground truth) and
``campus`` (the Make3D-format cross-domain set).
"""

from psdif.data.synthetic.campus import MAKE3D_NO_RETURN, generate_make3d
from psdif.data.synthetic.rig import CAM_HEIGHT, DATE, GENERATOR_VERSION, V_CREEP, VELO_MAX_RANGE
from psdif.data.synthetic.scene import (BUILDING, CAR, FENCE, POLE, ROAD, SIDEWALK, SKY, TERRAIN, TRAFFIC_LIGHT,
                                        TRAFFIC_SIGN, VEGETATION)
from psdif.data.synthetic.writer import (drive_name, drive_roles, generate_drive, generate_mini_kitti, gt_dir,
                                         params_key, write_calibration)

__all__ = ["generate_mini_kitti", "generate_make3d", "generate_drive", "write_calibration", "drive_roles",
           "drive_name", "gt_dir", "params_key", "DATE", "GENERATOR_VERSION", "V_CREEP", "CAM_HEIGHT",
           "VELO_MAX_RANGE", "MAKE3D_NO_RETURN", "ROAD", "SIDEWALK", "BUILDING", "FENCE", "POLE", "TRAFFIC_LIGHT",
           "TRAFFIC_SIGN", "VEGETATION", "TERRAIN", "SKY", "CAR"]
