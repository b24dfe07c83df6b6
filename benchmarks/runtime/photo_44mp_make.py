"""A 44 MP (8000 x 5500) synthetic noisy image, photo_44mp.png in the current folder, for --tile auto."""

import numpy as np
from PIL import Image

rng = np.random.default_rng(0)
h, w = 5500, 8000
yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
base = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 300) * np.cos(yy / 200)], axis=2)
img = np.clip(base + rng.normal(0, 0.05, base.shape).astype(np.float32), 0, 1)
Image.fromarray((img * 255).astype(np.uint8)).save("photo_44mp.png", compress_level=1)  # 8000 x 5500
