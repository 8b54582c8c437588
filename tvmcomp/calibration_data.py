"""``--calib-data``: the user's own inputs to calibrate quantization on, checked before calibration.

Three forms:

- ``.npz``: one array per model input, named as the input, samples along the first axis:
  ``np.savez("calib.npz", input_ids=ids[N, 128], attention_mask=mask[N, 128])`` for a model whose
  inputs are ``[B, 128]``. Samples are grouped into batches of the model's ``B``.
- ``.txt``: one text per line, turned into inputs by the model's tokenizer (text models).
- ``.tsv``: one labelled text per line, ``LABEL<TAB>TEXT``: the texts as a ``.txt``'s; the labels
  (:func:`read_labels`) make pruning rank by the task's loss instead of a label-free one.
- a folder of images (PNG, JPEG, ...), turned into inputs by the model's image processor; a model
  file with one ``[N, 3, H, W]`` float input and no processor gets its images resized to ``H x W``
  and normalized with ImageNet's mean and standard deviation (for other preprocessing, an ``.npz``).
  A folder of class subfolders (``calib/cat/1.png``, ``calib/dog/2.png``) labels its images by
  their subfolder, as a ``.tsv`` labels its texts.

Each problem (unknown or missing input, wrong shape or dtype, fewer samples than one batch, text
without a tokenizer, images for a model that takes none, an unreadable image) is a one-line error
naming it.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import TvmcompError
from .frontend import TensorSpec

FORMS = ("an .npz (one array per model input, first axis = samples), a .txt (one text per line), a .tsv (LABEL<TAB>TEXT "
         "per line) or a folder of images (or of class subfolders of images)")
Tokenize = Callable[[list[str]], dict[str, np.ndarray]]
PreprocessImages = Callable[[list[np.ndarray]], dict[str, np.ndarray]]


def input_makers(entry, inputs: list[TensorSpec]) -> tuple[Tokenize | None, PreprocessImages | None]:
    """How texts and images become inputs of this shape: the entry's tokenizer and image processor,
    or for a model file with one ``[N, 3, H, W]`` float input, resizing to ``H x W`` (ImageNet-normalized)."""
    from .models.images import ImagePreprocessor

    tokenize = preprocess = None
    if entry is not None and entry.tokenize is not None:
        seq_len = inputs[0].shape[1]
        tokenize = lambda lines: entry.tokenize(lines, seq_len)  # noqa: E731
    if entry is not None and entry.preprocess_images is not None:
        preprocess = entry.preprocess_images
    elif entry is None and len(inputs) == 1 and len(inputs[0].shape) == 4 and inputs[0].shape[1] == 3 \
            and inputs[0].dtype.startswith("float"):
        preprocess = ImagePreprocessor(inputs[0].name, tuple(int(d) for d in inputs[0].shape[2:]))
    return tokenize, preprocess


def read_calibration_data(path: str | Path, inputs: list[TensorSpec], tokenize: Tokenize | None = None,
                          preprocess_images: PreprocessImages | None = None, flag: str = "--calib-data") -> list[dict]:
    """Batches of inputs shaped as the model's ``inputs``, from ``path``; errors name ``flag``."""
    path = Path(path)
    if not path.exists():
        raise TvmcompError(f"{flag} {path}: not found")
    try:
        suffix = path.suffix.lower()
        if path.is_dir():
            samples = _from_images(path, preprocess_images)
        elif suffix in (".txt", ".tsv"):
            samples = _from_text(path, tokenize)
        elif suffix == ".npz":
            samples = _from_npz(path)
        else:
            raise TvmcompError(f"{path}: give {FORMS}")
        return _batches(path, samples, inputs)
    except TvmcompError as err:
        raise TvmcompError(f"{flag} {err}") from None


def _from_images(path: Path, preprocess: PreprocessImages | None) -> dict[str, np.ndarray]:
    from .models.images import read_image_folder

    if preprocess is None:
        raise TvmcompError(f"{path}: images need the model to take one [N, 3, H, W] image input "
                           "or to have an image processor, and this model has neither; give an .npz of input arrays")
    return preprocess(read_image_folder(path))


def _from_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, AttributeError) as err:
        raise TvmcompError(f"{path} is not a readable .npz ({err})") from None


def _from_text(path: Path, tokenize) -> dict[str, np.ndarray]:
    if tokenize is None:
        raise TvmcompError(f"{path}: text needs the model's tokenizer, and this model has none; "
                           "give an .npz of input arrays instead")
    lines = [text for _, text in _labelled_lines(path)] if path.suffix.lower() == ".tsv" else \
        [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not lines:
        raise TvmcompError(f"{path} has no text (one text per line)")
    return tokenize(lines)


def _labelled_lines(path: Path) -> list[tuple[str, str]]:
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label.strip() or not text.strip():
            raise TvmcompError(f"{path} line {number}: a .tsv line is LABEL<TAB>TEXT, not {line[:40]!r}")
        rows.append((label.strip(), text.strip()))
    return rows


def read_labels(path: str | Path) -> tuple[np.ndarray, list[str]] | None:
    """The labels of a ``.tsv`` (``LABEL<TAB>TEXT`` lines) or of a folder of class subfolders, as
    class indices in the order of :func:`read_calibration_data`'s samples, and the class names they
    index; None for an unlabelled form."""
    from .models.images import ImageFolder

    path = Path(path)
    if path.is_dir():
        folder = ImageFolder.read(path)
        if folder.labels is None:
            return None
        indices, classes = folder.labels, folder.classes
    elif path.suffix.lower() == ".tsv":
        labels = [label for label, _ in _labelled_lines(path)]
        classes = sorted(set(labels))
        indices = np.array([classes.index(label) for label in labels])
    else:
        return None
    if len(classes) < 2:
        raise TvmcompError(f"{path}: the labels name a task's classes, at least two; found {classes}")
    return indices, classes


def _batches(path: Path, samples: dict[str, np.ndarray], inputs: list[TensorSpec]) -> list[dict]:
    expected = [spec.name for spec in inputs]
    unknown, missing = sorted(set(samples) - set(expected)), [n for n in expected if n not in samples]
    if unknown or missing:
        raise TvmcompError(f"{path}: the model's inputs are {expected}; "
                           f"missing {missing}, unexpected {unknown}")
    counts = set()
    for spec in inputs:
        array = samples[spec.name]
        if array.ndim != len(spec.shape) or tuple(array.shape[1:]) != tuple(spec.shape[1:]):
            raise TvmcompError(f"{path}: '{spec.name}' has shape {list(array.shape)}; the model takes "
                               f"{list(spec.shape)}, so samples must be [N, {', '.join(map(str, spec.shape[1:]))}]")
        if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
            raise TvmcompError(f"{path}: '{spec.name}' is {array.dtype}; the model takes {spec.dtype}")
        counts.add(array.shape[0])
    if len(counts) != 1:
        raise TvmcompError(f"{path}: the inputs hold different numbers of samples ({sorted(counts)})")
    count, batch = counts.pop(), int(inputs[0].shape[0]) if inputs[0].shape else 1
    if count < batch:
        raise TvmcompError(f"{path}: {count} samples, fewer than one batch of {batch}")
    return [{spec.name: samples[spec.name][i * batch:(i + 1) * batch].astype(spec.dtype) for spec in inputs}
            for i in range(count // batch)]


def fingerprint(batches: list[dict]) -> str:
    """Identifies the data, so a saved calibration is reused only for the same data."""
    digest = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(batch[name]).tobytes())
    return digest.hexdigest()[:16]
