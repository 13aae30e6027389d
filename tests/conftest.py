import numpy as np
import pytest

import codec


@pytest.fixture(scope="session")
def model():
    return codec.load_model("default")


def natural_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured test image of any size (no external files needed)."""
    from skimage import data
    from skimage.transform import resize

    base = data.astronaut() if seed % 2 == 0 else data.chelsea()
    img = resize(base, (h, w), anti_aliasing=True, preserve_range=True)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def image():
    return natural_image(200, 330)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
