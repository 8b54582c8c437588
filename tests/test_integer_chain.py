"""Integer requantization between quantized ops (tvmcomp.quant.integer_chain) and the pot8 scheme
that relies on it (H-ViT: power-of-two steps, requantization by a rounding shift)."""

import re

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from test_cli import run_cli
from tvmcomp.quant.integer_chain import IntegerChain
from tvmcomp.quant.schemes import TensorQuant, get_scheme

RNG = np.random.default_rng(11)
BIAS = RNG.uniform(-0.5, 0.5, 8).astype(np.float32)


def _before(steps: np.ndarray, next_step, score_scale: float, zero_points=3):
    """An accumulator dequantized per channel, biased, reshaped to heads, permuted, scaled and quantized
    as the next matmul's operand: the Q projection feeding Q @ K^T. ``next_step``, ``zero_points``:
    one, or one per channel of the codes' last axis."""
    bb = relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType((4, 8), "int32"))
    with bb.function("main", [acc]):
        with bb.dataflow():
            y = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(steps)))
            y = bb.emit(relax.op.add(relax.const(BIAS), y))
            y = bb.emit(relax.op.reshape(y, (4, 2, 4)))
            y = bb.emit(relax.op.permute_dims(y, [1, 0, 2]))
            y = bb.emit(relax.op.multiply(y, relax.const(np.float32(score_scale))))
            q = bb.emit_output(relax.op.quantize(y, relax.const(np.broadcast_to(np.float32(next_step), (4,)).copy()),
                                                 relax.const(np.broadcast_to(np.int32(zero_points), (4,)).copy()),
                                                 axis=-1, out_dtype="int8"))
        bb.emit_func_output(q)
    return bb.get()


def _ops(mod):
    return [b.value.op.name for b in mod["main"].body.blocks[0].bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]


def _run(mod, acc):
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(acc)).numpy()


def _layout(codes):
    return codes.reshape(4, 2, 4).transpose(1, 0, 2)


def test_a_power_of_two_chain_becomes_a_rounding_shift_in_int32():
    steps = np.float32(2.0 ** -np.array([7, 8, 7, 9, 7, 8, 6, 7]))  # per-channel s_x * s_w
    before = _before(steps, next_step=2.0**-4, score_scale=0.5)
    chain = IntegerChain()
    after = chain(before)
    assert chain.rewritten == 1
    # Expected: integers from the accumulator to the codes, then the same reshape and permute on them
    assert _ops(after) == ["relax.add", "relax.add", "relax.right_shift", "relax.add", "relax.clip", "relax.astype",
                           "relax.reshape", "relax.permute_dims"]
    assert "float32" not in after["main"].script()
    acc = RNG.integers(-40000, 40000, (4, 8)).astype(np.int32)
    got = _run(after, acc)

    # s * c / t = 2^-k per channel; the bias enters at the accumulator's step
    k = np.array([7, 8, 7, 9, 7, 8, 6, 7]) + 1 - 4
    biased = acc.astype(np.int64) + np.round(BIAS / steps.astype(np.float64)).astype(np.int64)
    want = np.clip(((biased + 2 ** (k - 1)) >> k) + 3, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, _layout(want))
    # within a code of the float round trip it replaces (rounding: half up here, half to even there)
    assert np.abs(got.astype(int) - _run(before, acc).astype(int)).max() <= 1


def test_other_ratios_take_a_15_bit_dyadic_multiplier_in_int64():
    steps = np.float32(RNG.uniform(0.001, 0.003, 8))
    before = _before(steps, next_step=0.037, score_scale=0.42)
    after = IntegerChain()(before)
    assert "relax.multiply" in _ops(after) and "int64" in after["main"].script() and "float32" not in after["main"].script()
    acc = RNG.integers(-3000, 3000, (4, 8)).astype(np.int32)
    got = _run(after, acc)

    ratio = steps.astype(np.float64) * np.float64(np.float32(0.42)) / np.float64(np.float32(0.037))
    exponent = np.floor(np.log2(ratio)) + 1  # ratio = mantissa * 2^exponent, mantissa in [0.5, 1)
    m = np.round(ratio / 2.0**exponent * 2**15).astype(np.int64)
    k = (15 - exponent).astype(np.int64)
    biased = acc.astype(np.int64) + np.round(BIAS / steps.astype(np.float64)).astype(np.int64)
    want = np.clip(((biased * m + 2 ** (k - 1)) >> k) + 3, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, _layout(want))
    assert np.abs(got.astype(int) - _run(before, acc).astype(int)).max() <= 1


def test_a_quantize_fed_by_anything_else_is_left_alone():
    @tvm.script.ir_module
    class FloatInput:
        @R.function
        def main(x: R.Tensor((4, 8), "float32")):
            with R.dataflow():
                y = R.nn.gelu(x)
                q = R.quantize(y, R.const(0.1, "float32"), R.const(0, "int32"), axis=-1, out_dtype="int8")
                R.output(q)
            return q

    chain = IntegerChain()
    tvm.ir.assert_structural_equal(chain(FloatInput), FloatInput)
    assert chain.rewritten == 0


def test_power_of_two_steps_cover_the_range_and_the_zero_point_follows_the_rounded_step():
    quant = get_scheme("pot8").activation  # uint8 codes with a zero point
    scale, zero = quant.scale_zero_point(np.float64(-3.1), np.float64(2.0))
    # 5.1 / 255 = 0.02 -> 1/32; zero = round(3.1 * 32) = 99 (not round(3.1 / 0.02) = 155, the step before
    # rounding); codes 0..255 cover [-99, 156] / 32 = [-3.09, 4.88]
    assert scale == 2.0**-5 and zero == 99
    symmetric = TensorQuant(8, signed=True, symmetric=True, power_of_two=True)
    scale, zero = symmetric.scale_zero_point(np.float64(-3.1), np.float64(2.0))
    assert scale == 2.0**-5 and zero == 0  # 3.1 / 127 = 0.0244 -> 1/32; 127 / 32 = 3.97 >= 3.1


def test_pot8_tiny_encoder_requantizes_by_shifts_and_stays_close_to_float(tmp_path, capsys, empty_schedules):
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from test_shapes import cosine_to_transformers

    folder = _save_tiny_encoder(tmp_path / "bert", "bert")
    code, _, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", str(SEQ_LEN), "--quant", "pot8",
                           "--calibration-samples", "4", "--dump-code", "tir", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    # per layer: Q, K and V into the attention matmuls, P @ V into the output projection
    assert "[quant] pot8: 8 requantizations between quantized ops stay integer, 8 of them shifts" in err
    kernels = (tmp_path / "pkg" / "code" / "kernels.tir.py").read_text()
    requantize = re.findall(r"# (fused_packed_matmul\w*right_shift\w*)\n(.*?)(?=\n# \w+\n# from|\Z)", kernels, re.S)
    assert requantize and all("float" not in body for _, body in requantize)  # no float multiply, no float at all
    assert cosine_to_transformers(tmp_path / "pkg", folder).min() > 0.99


def test_codes_with_a_power_of_two_step_per_channel_are_requantized_after_the_layout_calls():
    """A balanced Linear's input (pot8: power-of-two factors per channel) fed by P @ V, whose
    accumulator has one step: reshape and permute on int32 first, then a shift per code channel."""
    code_steps = np.float32(2.0 ** -np.array([4, 5, 3, 4]))
    before = _before(np.full(8, 2.0**-9, np.float32), next_step=code_steps, score_scale=1.0)
    chain = IntegerChain()
    after = chain(before)
    assert chain.rewritten == 1
    assert _ops(after) == ["relax.add", "relax.reshape", "relax.permute_dims", "relax.add", "relax.right_shift",
                           "relax.add", "relax.clip", "relax.astype"]
    assert "float32" not in after["main"].script()
    acc = RNG.integers(-40000, 40000, (4, 8)).astype(np.int32)
    got = _run(after, acc)

    biased = _layout(acc.astype(np.int64) + np.round(BIAS * 2.0**9).astype(np.int64))
    k = 9 - np.array([4, 5, 3, 4])  # 2^-9 / 2^-e = 2^-(9 - e), along the codes' last axis
    want = np.clip(((biased + 2 ** (k - 1)) >> k) + 3, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, want)
    assert np.abs(got.astype(int) - _run(before, acc).astype(int)).max() <= 1


def test_codes_with_a_zero_point_per_channel_are_requantized_after_the_layout_calls():
    """A balanced Linear's input in unsigned codes (pot8, int8 --integer-only) has a zero point per
    channel, even where its steps are one: the shift and the zero points go along the codes' last axis,
    after reshape and permute on int32."""
    zero_points = np.array([3, 0, -5, 7])
    before = _before(np.full(8, 2.0**-9, np.float32), next_step=2.0**-4, score_scale=1.0, zero_points=zero_points)
    chain = IntegerChain()
    after = chain(before)
    assert chain.rewritten == 1
    assert _ops(after) == ["relax.add", "relax.reshape", "relax.permute_dims", "relax.add", "relax.right_shift",
                           "relax.add", "relax.clip", "relax.astype"]
    acc = RNG.integers(-40000, 40000, (4, 8)).astype(np.int32)
    got = _run(after, acc)

    biased = _layout(acc.astype(np.int64) + np.round(BIAS * 2.0**9).astype(np.int64))
    k = 9 - 4
    want = np.clip(((biased + 2 ** (k - 1)) >> k) + zero_points, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, want)
    assert np.abs(got.astype(int) - _run(before, acc).astype(int)).max() <= 1
