"""hetseg: semantic segmentation from heterogeneous annotations.

Many images with image-level labels (the weak set), few with pixel masks (the strong set):
DecoupledNet (NIPS 2015), its baselines, TransferNet (CVPR 2016).
"""

__version__ = "0.1.0"
