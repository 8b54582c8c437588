"""The quantization step of a build: annotate -> calibrate (or reuse a saved calibration) -> realize,
then quantize the embedding tables."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..errors import TvmcompError
from .annotate import annotate, quant_sites
from .calibrate import SiteRange, calibrate
from .dot_kernels import DotKernels
from .embeddings import quantize_embeddings
from .realize import realize
from .schemes import get_scheme

CALIBRATION = "calibration.json"


def load_calibration(package_dir: Path, model_hash: str, key: dict) -> dict[int, SiteRange] | None:
    """Ranges saved by an earlier build of the same model with the same settings, if any."""
    path = Path(package_dir) / CALIBRATION
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("model_hash") != model_hash or saved.get("settings") != key:
        return None
    return {int(index): SiteRange(**value) for index, value in saved["ranges"].items()}


def quantize_model(source, scheme_name: str, model_hash: str, previous_package: Path | None = None,
                   samples: int = 32, observer: str | None = None, keep_float: list[str] | None = None,
                   kernels: DotKernels = DotKernels(), stream=None, balance: str | float | None = None):
    """Rewrite the module of every shape ``source`` has to integer compute, with the ranges calibrated
    at its largest shape; returns the calibration document to save.

    ``kernels`` are the target's dot-product instructions (operands are packed for them);
    ``balance`` is the channel-balancing exponent alpha (:mod:`.balance`), None for none.
    """
    stream = stream or sys.stderr
    scheme = get_scheme(scheme_name)
    imported = source.imported
    annotated = annotate(imported.mod, imported.params, skip=keep_float)
    # the sites are part of the key: ranges are stored by site index, which a change to annotate
    # (or to --keep-float) shifts; patterns that only keep an embedding table float need no recalibration
    settings = {"scheme": scheme.name, "observer": observer or scheme.observer, "samples": samples,
                "data": source.calibration_key(), "channel_ranges": balance is not None,
                "sites": [f"{site.name}:{site.role}" for site in quant_sites(annotated)]}
    ranges = load_calibration(previous_package, model_hash, settings) if previous_package else None
    if ranges is None:
        batches = source.calibration_samples(samples)
        data = "the bundled data" if source.calibration_data is None else "--calib-data"
        print(f"[quant] calibrating {scheme.name} on {len(batches)} batches of {data} "
              f"({settings['observer']} observer)", file=stream)
        ranges = calibrate(annotated, imported.params, imported.inputs, batches,
                           scheme, observer, stream=stream, channel_ranges=balance is not None)
    else:
        print(f"[quant] reusing the calibration saved in {previous_package}", file=stream)
    for shape_imported in source.shapes().values():  # every shape reuses the ranges calibrated at the largest
        shape_annotated = annotated if shape_imported is imported else annotate(
            shape_imported.mod, shape_imported.params, skip=keep_float)
        if [f"{site.name}:{site.role}" for site in quant_sites(shape_annotated)] != settings["sites"]:
            raise TvmcompError(f"{source.name} quantizes different layers at another shape: build one shape per package")
        shape_imported.mod = realize(shape_annotated, shape_imported.params, ranges, scheme, kernels, balance)
        if scheme.embedding is not None:
            shape_imported.mod = quantize_embeddings(shape_imported.mod, shape_imported.params, scheme.embedding,
                                                     keep_float)
    return {"model_hash": model_hash, "settings": settings, "balance": balance,
            "ranges": {str(index): asdict(value) for index, value in ranges.items()}}
