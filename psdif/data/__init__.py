"""Data in and out of the KITTI raw layout: readers, the downloader, the static-frame filter, the training dataset, Make3D and the mini-KITTI generator."""
