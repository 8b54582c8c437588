"""Attention probabilities on their own integer grid where they multiply V: int8's 15-bit steps, and
--attn-probs log2:B (TP-ViT), P @ V on integers either way."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from test_cli import assert_user_error, run_cli
from test_quant_passes import INT8
from tvmcomp.quant.annotate import Annotate
from tvmcomp.quant.attn_probs import Log2Probs, log2_exponents, parse_attn_probs
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.dot_kernels import DotKernels
from tvmcomp.quant.realize import Realize
from test_wide_inputs import AVX2_I16


@tvm.script.ir_module
class ProbsTimesV:
    @R.function
    def main(s: R.Tensor((2, 4, 16), "float32"), v: R.Tensor((2, 16, 8), "float32")):
        R.func_attr({"num_input": 2})
        with R.dataflow():
            p = R.nn.softmax(s, axis=-1)
            y = R.matmul(p, v, out_dtype="float32")
            R.output(y)
        return y


V_RANGE = SiteRange(scale=0.02, zero_point=120, lo=-2.4, hi=2.7)


def _scores():
    """Scores whose probabilities lie away from every rounding boundary of -log2 p (x.5), so that a
    last-bit difference between TVM's and NumPy's exp or log cannot move a code."""
    rng = np.random.default_rng(7)
    while True:
        s = (rng.standard_normal((2, 4, 16)) * 3).astype(np.float32)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        if np.abs(np.modf(-np.log2(p))[0] - 0.5).min() > 1e-3:
            return s, p.astype(np.float32)


def test_log2_exponents_from_float_bits_are_the_nearest_power_of_two_in_the_log_domain():
    _, p = _scores()
    p = np.concatenate([p.ravel(), np.float32([1.0, 0.5, 0.7, 0.72, 0.0, 1e-40])])
    with np.errstate(divide="ignore"):
        want = np.round(-np.log2(p.astype(np.float64)))  # -log2 0.7 = 0.515 -> 1; -log2 0.72 = 0.474 -> 0
    got = log2_exponents(p)
    np.testing.assert_array_equal(got[:-2], want[:-2])
    assert got[-2] > 125 and got[-1] > 125  # 0 and a denormal: beyond every bottom level


def _run(realized, s, v):
    vm = relax.VirtualMachine(tvm.compile(realized, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(s), tvm.runtime.tensor(v)).numpy()


def _v_codes(v):
    return np.clip(np.round(v / np.float32(0.02)) + 120, 0, 255).astype(np.int64) - 120


def _ops(realized):
    return [b.value.op.name for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)
            and isinstance(b.value.op, tvm.ir.Op)]


@pytest.mark.parametrize("kernels", [DotKernels(), DotKernels(batched=AVX2_I16)], ids=["plain", "packed"])
@pytest.mark.parametrize("bits, top", [(3, 2), (4, 0), (4, 3)])
def test_log2_probabilities_times_v_match_the_numpy_integer_reference_exactly(bits, top, kernels):
    s, p = _scores()
    v = np.random.default_rng(8).standard_normal((2, 16, 8)).astype(np.float32)
    ranges = {0: SiteRange(scale=1 / 255, zero_point=0, lo=0.0, hi=float(p.max()), prob_params={"top": top}),
              1: V_RANGE}
    realized = Realize({}, ranges, INT8, kernels, probs=Log2Probs(bits))(Annotate([])(ProbsTimesV))
    ops = _ops(realized)
    assert ops.count("relax.quantize") == 1  # V's; P's codes come from its float bits, with no log or power
    assert "relax.log" not in ops and "relax.power" not in ops and "log2_codes" in realized.script()
    got = _run(realized, s, v)

    # 2^B - 1 levels from 2^-top down; each probability to its nearest power of two in the log domain, as
    # the shift 2^(bottom - e); the row renormalized by the sum of its codes
    bottom = top + 2**bits - 2
    e = np.round(-np.log2(p.astype(np.float64)))
    p_int = np.where(e > bottom, 0, 2 ** (bottom - np.clip(e, top, bottom))).astype(np.int64)
    row_sums = np.maximum(p_int.sum(-1, keepdims=True), 1).astype(np.float32)
    want = (p_int @ _v_codes(v)).astype(np.float32) * np.float32(0.02) / row_sums
    np.testing.assert_array_equal(got, want)
    # and it approximates softmax(s) @ v
    assert np.abs(got - p @ v).max() < 0.5 * np.abs(p @ v).max()


@pytest.mark.parametrize("kernels", [DotKernels(), DotKernels(batched=AVX2_I16)], ids=["plain", "packed"])
def test_int8_multiplies_15_bit_probabilities_exactly_and_nearly_as_float(kernels):
    s, p = _scores()
    v = np.random.default_rng(9).standard_normal((2, 16, 8)).astype(np.float32)
    ranges = {0: SiteRange(scale=1 / 255, zero_point=0, lo=0.0, hi=float(p.max())), 1: V_RANGE}
    realized = Realize({}, ranges, INT8, kernels, probs=parse_attn_probs(INT8.attn_probs))(Annotate([])(ProbsTimesV))
    assert INT8.attn_probs == "uniform:15"
    got = _run(realized, s, v)
    p_int = np.minimum(np.round(p.astype(np.float32) * np.float32(2**15)), 2**15 - 1).astype(np.int64)
    want = (p_int @ _v_codes(v)).astype(np.float32) * (np.float32(2.0**-15) * np.float32(0.02))
    np.testing.assert_array_equal(got, want)
    v_restored = _v_codes(v) * 0.02
    assert np.abs(got - p @ v_restored).max() < 1e-3 * np.abs(v_restored).max()  # P's steps: 2^-15


def test_the_log2_top_is_calibrated_by_error_not_by_the_largest_probability():
    """Attention spread over 257 keys with one sharp row: at 3 bits the largest probability (~1) as
    top would truncate every spread row to 0; the observer picks the top whose renormalized grid is
    nearest in squared error, computed here from the definition."""
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((64, 257)) * 0.7
    scores[0, 5] = 40.0
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    observer = Log2Probs(3).observer()
    observer.observe(p[:32])
    observer.observe(p[32:])

    def error(top):
        bottom = top + 6
        e = np.round(-np.log2(p.astype(np.float64)))
        codes = np.where(e > bottom, 0.0, 2.0 ** (bottom - np.clip(e, top, bottom)))
        return np.square(codes / np.maximum(codes.sum(-1, keepdims=True), 1) - p).sum()

    errors = [error(top) for top in range(10)]
    assert observer.params() == {"top": int(np.argmin(errors))}
    assert observer.params()["top"] >= 3 > round(-np.log2(p.max()))  # not the largest probability's 0
    signed = Log2Probs(3).observer()
    signed.observe(np.float32([[-0.5, 1.5]]))
    assert signed.params() is None  # not probabilities: no parameters


def test_a_tiny_encoder_builds_with_log2_probabilities_and_stays_close_to_float(tmp_path, capsys, empty_schedules):
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from test_shapes import cosine_to_transformers

    folder = _save_tiny_encoder(tmp_path / "bert", "bert")
    code, _, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", str(SEQ_LEN), "--quant", "int8",
                           "--attn-probs", "log2:4", "--calibration-samples", "4", "--dump-code", "relax",
                           "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    assert "[quant] --attn-probs log2:4: 2 attention matmuls multiply log2 probabilities" in err  # one a layer
    assert "log2_codes" in (tmp_path / "pkg" / "code" / "model.relax.py").read_text()
    assert cosine_to_transformers(tmp_path / "pkg", folder).min() > 0.95


@pytest.mark.parametrize("flags, message", [
    (["--attn-probs", "log2:4"], "--attn-probs quantizes attention probabilities: add --quant int8"),
    (["--quant", "int8", "--attn-probs", "log4:2"], "--attn-probs takes uniform:B (B = 8..15) or log2:B (B = 3 or 4), "
                                                    "not 'log4:2'"),
    (["--quant", "int8", "--attn-probs", "log2:8"], "--attn-probs log2:8: B must be 3..4 for log2; the codes "
                                                    "2^(levels - 1) must fit int16"),
    (["--quant", "int8", "--attn-probs", "uniform:16"], "--attn-probs uniform:16: B must be 8..15 for uniform"),
])
def test_bad_attn_probs_are_one_line_errors(flags, message, tmp_path, capsys):
    assert_user_error(capsys, ["build", *flags, "-o", str(tmp_path / "p")], message)
