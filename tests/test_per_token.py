"""--per-token: each token's input to a Linear gets its own step and zero point, computed at run time
from the token's min and max (dynamic quantization), exact against NumPy written out here."""

import numpy as np
import pytest
import tvm
from tvm import relax

from test_cli import assert_user_error, run_cli
from test_int4 import WideLinear
from test_quant_passes import LinearAnnotated
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.dot_kernels import DotKernels
from tvmcomp.quant.pipeline import QuantOptions
from tvmcomp.quant.realize import Realize
from tvmcomp.quant.schemes import Granularity

PER_TOKEN_INT8 = QuantOptions("int8", per_token=True).resolve_scheme()


def _token_codes(x):
    """Per row: [lo, hi] = [min(min x, 0), max(max x, 0)], step (hi - lo) / 255 in float32 (1 where
    the row is all zeros), zero point round(-lo / step), codes clip(round(x / step) + z, 0, 255);
    round half to even."""
    x = x.astype(np.float32)
    lo = np.minimum(x.min(axis=-1, keepdims=True), np.float32(0))
    hi = np.maximum(x.max(axis=-1, keepdims=True), np.float32(0))
    span = hi - lo
    step = np.where(span > 0, span / np.float32(255), np.float32(1)).astype(np.float32)
    zero = np.clip(np.round(np.float32(0) - lo / step), 0, 255)
    codes = np.clip(np.round(x / step) + zero, 0, 255)
    return codes.astype(np.int64), step, zero.astype(np.int64)


def _per_token_int8_reference(x, weight_nk, bias):
    """int8 weights per output channel (absmax / 127); per row the integer dot product less the row's
    zero point times each column's code sum, times the column's and then the row's step; plus the bias."""
    xq, step, zero = _token_codes(x)
    w_kn = weight_nk.T
    s_w = (np.abs(w_kn).max(axis=0).astype(np.float64) / 127).astype(np.float32)
    wq = np.clip(np.round(w_kn / s_w), -127, 127).astype(np.int64)
    acc = xq @ wq - zero * wq.sum(axis=0)
    return acc.astype(np.float32) * s_w * step + bias


def _run(realized, params, x):
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    vm = relax.VirtualMachine(tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _params(rows=2, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32)}
    return params, rng.standard_normal((rows, 8)).astype(np.float32)


# a calibrated range realize must not read: per-token steps come from the tokens themselves
UNUSED_RANGE = {0: SiteRange(scale=1e3, zero_point=7, lo=-1.0, hi=1.0)}


def test_the_scheme_takes_per_token_steps_on_linear_inputs_only():
    assert PER_TOKEN_INT8.linear_input.granularity is Granularity.PER_TOKEN
    assert PER_TOKEN_INT8.activation.granularity is Granularity.PER_TENSOR  # attention operands: calibrated
    assert PER_TOKEN_INT8.balance is None
    assert QuantOptions("int8", per_token=True).variant == "int8-per-token"


def test_a_per_token_linear_computes_row_steps_at_run_time_and_matches_the_integer_reference_exactly():
    params, x = _params()
    x[1] *= 50  # one token 50x larger: a step per tensor would leave the other a few codes
    realized = Realize(params, UNUSED_RANGE, PER_TOKEN_INT8)(LinearAnnotated)
    # what main must become: one kernel gives the codes and each row's step and zero point; the
    # integer matmul; the epilogue takes each row's zero point times the column sums off, scales by
    # column, then by row
    bindings = realized["main"].body.blocks[0].bindings
    ops = [b.value.op.name if isinstance(b.value, relax.Call) else type(b.value).__name__ for b in bindings]
    assert ops == ["relax.call_tir", "TupleGetItem", "TupleGetItem", "relax.strided_slice", "relax.strided_slice",
                   "relax.astype", "relax.matmul", "relax.multiply", "relax.subtract", "relax.astype", "relax.multiply",
                   "relax.multiply", "relax.add"], ops
    assert [(str(t.dtype), [int(d) for d in t.shape.values]) for t in bindings[0].var.ty.fields] == \
        [("uint8", [2, 8]), ("float32", [2, 2])]
    assert "R.quantize(" not in realized.script()  # no calibrated step
    sch = tvm.s_tir.Schedule(realized["token_quantize"])
    blocks = [sch.get(block).name_hint for block in sch.get_child_blocks(sch.get_sblock("root"))]
    assert blocks == ["token_max", "token_min", "token_step", "token_zero", "token_codes", "token_max_1", "token_min_1",
                      "token_step_zero"], blocks
    np.testing.assert_array_equal(_run(realized, params, x), _per_token_int8_reference(x, params["w"], params["b"]))


@pytest.mark.parametrize("preset, codes", [("x86-znver4", "uint8"), ("arm", "int8")])
def test_on_a_dot_kernel_the_codes_take_its_dtype_and_the_result_is_the_same(preset, codes):
    """VNNI reads uint8 codes; Arm's sdot int8, codes and zero points alike lowered by 128."""
    from tvmcomp.quant.dot_kernels import dot_kernels_for
    from tvmcomp.targets import resolve_target

    params, x = _params()
    x[0] *= 20
    realized = Realize(params, UNUSED_RANGE, PER_TOKEN_INT8, dot_kernels_for(resolve_target(preset)))(LinearAnnotated)
    assert "packed_int8_matmul" in realized.script()
    assert str(realized["main"].body.blocks[0].bindings[0].var.ty.fields[0].dtype) == codes
    np.testing.assert_array_equal(_run(realized, params, x), _per_token_int8_reference(x, params["w"], params["b"]))


def test_rows_of_very_different_size_keep_their_precision_per_token_not_per_tensor():
    from tvmcomp.quant.schemes import get_scheme

    params, x = _params(rows=2, seed=1)
    x[0] *= 0.01
    exact = x @ params["w"].T
    lo, hi = float(x.min()), float(x.max())
    scale, zero = get_scheme("int8").activation.scale_zero_point(np.float64(lo), np.float64(hi))
    per_tensor = _run(Realize(params, {0: SiteRange(float(scale), int(zero), lo, hi)}, get_scheme("int8"))(
        LinearAnnotated), params, x) - params["b"]
    per_token = _run(Realize(params, UNUSED_RANGE, PER_TOKEN_INT8)(LinearAnnotated), params, x) - params["b"]

    def relative_error(y):
        return np.linalg.norm(y[0] - exact[0]) / np.linalg.norm(exact[0])

    assert relative_error(per_token) < 0.02
    assert relative_error(per_tensor) > 0.2  # the small row holds about two codes of the shared step


def test_an_all_zero_token_gets_step_1_and_exact_zeros():
    params, x = _params()
    x[0] = 0.0
    got = _run(Realize(params, UNUSED_RANGE, PER_TOKEN_INT8)(LinearAnnotated), params, x)
    np.testing.assert_array_equal(got[0], params["b"])


@pytest.mark.parametrize("scheme", ["w4a8", "pwlq4"])
def test_a_4_bit_linear_with_per_token_inputs_matches_its_per_tensor_form_on_each_rows_step(scheme):
    """The int4 kernel's group scales do not include the input step: the row's step multiplies after,
    and its zero point times the weights' scaled code sums is taken off. Checked against the same
    Linear realized per tensor with that row's step and zero point, row by row (the int4 kernel
    itself is checked against NumPy in test_int4 and test_pwlq)."""
    from dataclasses import replace

    from test_dot_kernels import _x86_preset_on
    from tvmcomp.quant.dot_kernels import dot_kernels_for
    from tvmcomp.quant.schemes import get_scheme

    rng = np.random.default_rng(5)
    params = {"w": rng.standard_normal((32, 64)).astype(np.float32), "b": rng.standard_normal(32).astype(np.float32)}
    x = (rng.standard_normal((6, 64)) * np.array([0.1, 1, 3, 10, 0.5, 2])[:, None]).astype(np.float32)
    kernels = dot_kernels_for(_x86_preset_on("znver4"))
    options = QuantOptions(scheme, weight_rounding="nearest", per_token=True)
    realized = Realize(params, UNUSED_RANGE, options.resolve_scheme(), kernels)(WideLinear)
    assert "int4_group_matmul" in realized.script()
    got = _run(realized, params, x)
    _, steps, zeros = _token_codes(x)
    per_tensor = replace(get_scheme(scheme), weight_rounding="nearest")
    for row in range(len(x)):
        ranges = {0: SiteRange(float(steps[row, 0]), int(zeros[row, 0]), -1.0, 1.0)}
        want = _run(Realize(params, ranges, per_tensor, kernels)(WideLinear), params, np.repeat(x[row:row + 1], 6, 0))
        np.testing.assert_allclose(got[row], want[0], rtol=1e-5, atol=1e-5 * np.abs(want[0]).max())


def test_per_token_refuses_what_computes_steps_at_build_time(tmp_path, capsys):
    out = ["-o", str(tmp_path / "p")]
    assert_user_error(capsys, ["build", "--per-token", *out], "--per-token gives each token its own quantization "
                      "step: add --quant int8")
    assert_user_error(capsys, ["build", "--quant", "pot8", "--per-token", *out], "--per-token with pot8: per-token "
                      "steps are computed at run time, so they cannot be powers of two")
    assert_user_error(capsys, ["build", "--quant", "w4", "--per-token", *out], "--per-token quantizes Linear inputs; "
                      "w4 keeps them float")
    assert_user_error(capsys, ["build", "--quant", "int8", "--per-token", "--balance", "--wide-inputs", *out],
                      "--per-token computes each token's step at run time, so it takes no --balance or --wide-inputs")
    assert_user_error(capsys, ["build", "--quant", "int8", "--per-token", "--integer-only", *out], "no --integer-only")


def test_a_tiny_bert_built_per_token_agrees_with_transformers(tmp_path, capsys, empty_schedules):
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from test_shapes import cosine_to_transformers

    folder = _save_tiny_encoder(tmp_path / "bert", "bert")
    code, out, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", str(SEQ_LEN), "--quant", "int8",
                             "--per-token", "--calibration-samples", "4", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    assert "int8-per-token" in out + err
    assert cosine_to_transformers(tmp_path / "pkg", folder).min() > 0.995
