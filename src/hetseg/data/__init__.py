"""Data layer: records and split files, VOC/SBD/COCO readers, fashion-scenes, crops."""
