import re

import numpy as np
import pytest

from tvmcomp.errors import TvmcompError
from tvmcomp.quant.observers import make_observer
from tvmcomp.quant.schemes import Granularity, TensorQuant, get_scheme


def test_int8_scheme_is_w8a8():
    scheme = get_scheme("int8")
    assert (scheme.weight.qmin, scheme.weight.qmax, scheme.weight.dtype) == (-127, 127, "int8")
    assert scheme.weight.granularity is Granularity.PER_CHANNEL
    assert (scheme.activation.qmin, scheme.activation.qmax, scheme.activation.dtype) == (0, 255, "uint8")


def test_unknown_scheme_lists_the_registry():
    with pytest.raises(TvmcompError, match="unknown quantization scheme 'int3'; available: fp32, int8"):
        get_scheme("int3")


def test_asymmetric_uint8_round_trip_error_is_half_a_step():
    quant = TensorQuant(bits=8, signed=False, symmetric=False)
    x = np.linspace(-1.3, 4.1, 1001, dtype=np.float32)
    scale, zero = quant.scale_zero_point(x.min(), x.max())
    q = quant.quantize(x, scale, zero)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    assert np.abs((q.astype(np.float32) - zero) * scale - x).max() <= scale / 2 + 1e-6
    assert quant.quantize(np.float32(0.0), scale, zero) == zero  # zero is exact


def test_symmetric_per_channel_weights():
    quant = get_scheme("int8").weight
    w = np.array([[0.5, -2.0], [0.25, 1.0], [-0.5, 0.0]], np.float32)  # [K=3, N=2]: scales per column
    scale, zero = quant.scale_zero_point(w.min(axis=0), w.max(axis=0))
    np.testing.assert_allclose(scale, [0.5 / 127, 2.0 / 127])
    assert (zero == 0).all()
    q = quant.quantize(w, scale, zero)
    assert q[0, 0] == 127 and q[0, 1] == -127 and q[2, 0] == -127


def _outlier_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(100_000).astype(np.float32)
    x[:5] = 80.0  # a few huge activations, as Transformers have
    return x


def test_minmax_covers_everything():
    observer = make_observer("minmax")
    for chunk in np.split(_outlier_data(), 4):
        observer.observe(chunk)
    lo, hi = observer.range(get_scheme("int8").activation)
    assert hi == 80.0 and lo < -4


def _reconstruction_mse(quant, x, lo, hi):
    scale, zero = quant.scale_zero_point(lo, hi)
    return float(np.mean(((quant.quantize(x, scale, zero).astype(np.float32) - zero) * scale - x) ** 2))


def _observe(name, data):
    observer = make_observer(name)
    for chunk in np.split(data, 4):  # a growing range: the histogram is re-binned
        observer.observe(chunk)
    return observer.range(get_scheme("int8").activation)


def test_percentile_cuts_rare_outliers():
    lo, hi = _observe("percentile", _outlier_data())
    assert -6 < lo < -2 and 2 < hi < 10


@pytest.mark.parametrize("name", ["mse", "kl"])
def test_search_observers_clip_a_heavy_tail(name):
    # Laplace data: a long tail that costs resolution in the bulk; both criteria clip it
    data = np.random.default_rng(1).laplace(size=100_000).astype(np.float32)
    lo, hi = _observe(name, data)
    assert 2 < hi < data.max() and data.min() < lo < -2 and hi - lo < 0.97 * (data.max() - data.min())
    quant = get_scheme("int8").activation
    if name == "mse":  # the criterion it minimises, measured on the raw data rather than the histogram
        assert _reconstruction_mse(quant, data, lo, hi) < _reconstruction_mse(quant, data, data.min(), data.max())


def test_observer_errors():
    with pytest.raises(TvmcompError, match="unknown observer 'median'"):
        make_observer("median")
    with pytest.raises(TvmcompError, match="saw no data"):
        make_observer("minmax").range(get_scheme("int8").activation)


@pytest.mark.parametrize("changes, reason", [
    ({"weight": TensorQuant(bits=8, signed=False, symmetric=False, granularity=Granularity.PER_CHANNEL)},
     "weights must be signed and symmetric (realize has no weight zero point)"),
    ({"weight": TensorQuant(bits=8, signed=True, symmetric=True)}, "weights must have one scale per channel or per group"),
    ({"activation": TensorQuant(bits=16, signed=False, symmetric=False)},
     "activations must fit 8 bits (int32 accumulation of a 3072-long dot product)"),
    ({"activation": TensorQuant(bits=8, signed=False, symmetric=False, granularity=Granularity.PER_CHANNEL)},
     "activations must have one scale per tensor"),
    ({"weight": TensorQuant(bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, mse_clip=True)},
     "mse_clip searches the step of weights in groups with one region and steps that need not be powers of two"),
])
def test_a_scheme_realize_cannot_execute_is_refused_at_registration(changes, reason):
    from dataclasses import replace

    from tvmcomp.quant.schemes import SCHEMES, register_scheme

    bad = replace(get_scheme("int8"), name="bad", **changes)
    with pytest.raises(TvmcompError, match=re.escape(f"quantization scheme 'bad' cannot be executed: {reason}")):
        register_scheme(bad)
    assert "bad" not in SCHEMES
