"""--attn-probs log2:B: softmax outputs on a truncated log2 grid, P @ V on integers (TP-ViT)."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from test_cli import assert_user_error, run_cli
from test_quant_passes import INT8
from tvmcomp.quant.annotate import annotate
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.dot_kernels import DotKernels
from tvmcomp.quant.realize import realize
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


@pytest.mark.parametrize("kernels", [DotKernels(), DotKernels(batched=AVX2_I16)], ids=["plain", "packed"])
@pytest.mark.parametrize("bits", [3, 4])
def test_log2_probabilities_times_v_match_the_numpy_integer_reference_exactly(bits, kernels):
    s, p = _scores()
    v = np.random.default_rng(8).standard_normal((2, 16, 8)).astype(np.float32)
    annotated = annotate(ProbsTimesV, [])
    ranges = {0: SiteRange(scale=1 / 255, zero_point=0, lo=0.0, hi=float(p.max())), 1: V_RANGE}
    realized = realize(annotated, {}, ranges, INT8, kernels, prob_bits=bits)
    ops = [b.value.op.name for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)
           and isinstance(b.value.op, tvm.ir.Op)]
    assert "relax.log" in ops and "relax.power" in ops and "relax.quantize" in ops  # V still uniform int8
    assert ops.count("relax.quantize") == 1  # P is not uniformly quantized
    vm = relax.VirtualMachine(tvm.compile(realized, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(s), tvm.runtime.tensor(v)).numpy()

    # top: the exponent of the largest probability calibrated; 2^B - 1 levels from there down
    top = max(0, int(np.round(-np.log2(float(p.max())))))
    bottom = top + 2**bits - 2
    e = np.round(-np.log2(p.astype(np.float64)))
    p_int = np.where(e > bottom, 0, 2 ** (bottom - np.clip(e, top, bottom))).astype(np.int64)  # 2^(bottom - q)
    vq = np.clip(np.round(v / np.float32(0.02)) + 120, 0, 255).astype(np.int64) - 120
    want = (p_int @ vq).astype(np.float32) * (np.float32(2.0**-bottom) * np.float32(0.02))
    np.testing.assert_array_equal(got, want)
    # and it approximates softmax(s) @ v: each probability within a factor sqrt(2), or below the last level
    assert np.abs(got - p @ v).max() < 0.45 * np.abs(p @ v).max() + 2.0**-bottom * 16 * 2.7


def test_a_tiny_encoder_builds_with_log2_probabilities_and_stays_close_to_float(tmp_path, capsys, empty_schedules):
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from test_shapes import _transformers_output

    import tvmcomp

    folder = _save_tiny_encoder(tmp_path / "bert", "bert")
    code, _, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", str(SEQ_LEN), "--quant", "int8",
                           "--attn-probs", "log2:4", "--calibration-samples", "4", "--dump-code", "relax",
                           "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    assert "[quant] --attn-probs log2:4: 2 attention matmuls multiply log2 probabilities" in err  # one a layer
    assert "power" in (tmp_path / "pkg" / "code" / "model.relax.py").read_text()
    package = tvmcomp.load(tmp_path / "pkg")
    inputs = package.example_inputs()
    got = package.run(**inputs)[0]
    want = _transformers_output(folder, inputs["input_ids"], inputs["attention_mask"])
    cosine = np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cosine.min() > 0.95


@pytest.mark.parametrize("flags, message", [
    (["--attn-probs", "log2:4"], "--attn-probs quantizes attention probabilities: add --quant int8"),
    (["--quant", "int8", "--attn-probs", "log4:2"], "--attn-probs takes log2:B (B bits, 3 or 4), not 'log4:2'"),
    (["--quant", "int8", "--attn-probs", "log2:8"], "--attn-probs log2:8: B must be 3 or 4; the P @ V kernel "
                                                    "multiplies 2^(levels - 1) in int16"),
])
def test_bad_attn_probs_are_one_line_errors(flags, message, tmp_path, capsys):
    assert_user_error(capsys, ["build", *flags, "-o", str(tmp_path / "p")], message)
