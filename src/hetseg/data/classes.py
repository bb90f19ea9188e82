"""Class-name lists. Index 0 is always background; 255 is void/ignore in masks.

Image-level label sets hold *mask indices* in [1, C): the classifier's output j is class j + 1.
"""

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

# Fashion-MNIST's ten classes in their label order (0..9) become mask indices 1..10.
FASHION_CLASSES: tuple[str, ...] = (
    "background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot",
)

# TransferNet-style split of fashion-scenes (docs/TRANSFERNET.md), as mask indices.
FASHION_SOURCE: tuple[int, ...] = (1, 2, 6, 8, 9)  # T-shirt/top, Trouser, Sandal, Sneaker, Bag
FASHION_TARGET: tuple[int, ...] = (3, 4, 5, 7, 10)  # Pullover, Dress, Coat, Shirt, Ankle boot

IGNORE_INDEX = 255
