"""w4a8: 4-bit weights in groups, two codes per byte, on the int8 dot instructions (#14).

The packing, the per-group quantization and the Linear are checked against NumPy written out
here; the kernels run where the host has their instruction and are disassembled where it does not.
"""

import re
from dataclasses import replace

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from models_for_tests import mlp_source
from test_dot_kernels import _disassemble, _host_has, _x86_preset_on
from tvmcomp.build import build
from tvmcomp.errors import TvmcompError
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.dot_kernels import DotKernels, dot_kernels_for, pack_int4_weight
from tvmcomp.quant.pipeline import QuantOptions
from tvmcomp.quant.grids import quantize_weight
from tvmcomp.quant.realize import Realize
from tvmcomp.quant.schemes import Granularity, QuantScheme, TensorQuant, get_scheme, register_scheme
from tvmcomp.targets import resolve_target

W4A8 = get_scheme("w4a8")


def test_int4_weights_pack_two_codes_per_byte_in_the_kernel_block_layout():
    """Byte [i, j, c, r]: output channel i*bn + c, codes j*bk + r (low nibble) and j*bk + bk/2 + r
    (high nibble), each stored as code + 8."""
    codes = np.random.default_rng(0).integers(-8, 8, (32, 48))  # [K, N]
    packed = pack_int4_weight(codes, (16, 8))
    assert packed.shape == (3, 4, 16, 4) and packed.dtype == np.uint8
    for i, j, c, r in np.ndindex(packed.shape):
        byte = int(packed[i, j, c, r])
        assert (byte & 0xF) - 8 == codes[j * 8 + r, i * 16 + c]
        assert (byte >> 4) - 8 == codes[j * 8 + 4 + r, i * 16 + c]


def clipped_step(rows: np.ndarray, qmax: int = 7) -> np.ndarray:
    """A group's 4-bit step per column (rows: [group, N]): ``s = r * max|w| / qmax`` for r = 0.5, 0.55,
    ..., 1, the one whose codes ``clip(round(w / s), -qmax, qmax)`` leave the least squared error
    (the largest r where tied; the unclipped step rounded to float32 first, as scales are stored)."""
    rows = np.asarray(rows, np.float64)
    unclipped = (np.abs(rows).max(axis=0) / qmax).astype(np.float32).astype(np.float64)
    best_step, best_error = unclipped, np.full(rows.shape[1:], np.inf)
    for r in np.linspace(0.5, 1.0, 11)[::-1]:
        step = r * unclipped
        error = np.square(rows - np.clip(np.round(rows / step), -qmax, qmax) * step).sum(axis=0)
        best_step, best_error = np.where(error < best_error, step, best_step), np.minimum(error, best_error)
    return best_step.astype(np.float32)


def test_weights_are_quantized_with_one_scale_per_group_and_output_channel():
    weight = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)  # [K, N], groups of 32
    weight[40, 3] = 9.0  # an outlier: only its own group of channel 3 gets the coarse step
    codes, scales = quantize_weight(weight, W4A8.weight)
    assert scales.shape == (2, 8)
    for g in range(2):
        rows = weight[g * 32:(g + 1) * 32]
        step = clipped_step(rows)  # symmetric 4-bit: codes -7..7
        np.testing.assert_array_equal(scales[g], step)
        np.testing.assert_array_equal(codes[g * 32:(g + 1) * 32], np.clip(np.round(rows / step), -7, 7))
    assert scales[1, 3] > 4 * scales[0, 3]
    # the search clips: some groups' steps are below max|w| / 7, none above
    unclipped = np.abs(weight.reshape(2, 32, 8)).max(axis=1) / 7
    assert np.all(scales <= unclipped * (1 + 1e-6)) and np.any(scales < 0.95 * unclipped)


@tvm.script.ir_module
class WideLinear:
    @R.function
    def main(x: R.Tensor((6, 64), "float32"), w: R.Tensor((32, 64), "float32"), b: R.Tensor((32,), "float32")):
        R.func_attr({"num_input": 1, "tvmcomp.quant_sites": ["w:T"]})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            xs = R.call_pure_packed("tvmcomp.quant_site", x, R.prim_value(0), ty_args=(R.Tensor((6, 64), "float32"),))
            y = R.matmul(xs, wt, out_dtype="float32")
            z = R.add(b, y)
            R.output(z)
        return z


def _w4a8_reference(x, weight_nk, bias, scale, zero_point):
    """uint8 codes of x (round half to even); 4-bit codes of W with a step per (group of 32, output);
    per group an integer dot product, scaled by s_x * s_w[g, n]; summed over groups; plus the bias."""
    xq = np.clip(np.round(x / np.float32(scale)) + zero_point, 0, 255).astype(np.int64)
    weight = weight_nk.T.astype(np.float32)
    k, n = weight.shape
    y = np.zeros((x.shape[0], n))
    for g in range(k // 32):
        rows = weight[g * 32:(g + 1) * 32]
        step = clipped_step(rows)
        wq = np.clip(np.round(rows / step), -7, 7).astype(np.int64)
        acc = (xq[:, g * 32:(g + 1) * 32] - zero_point) @ wq
        y += acc * (np.float64(np.float32(scale)) * step)
    return y + bias


def _wide_linear_inputs():
    rng = np.random.default_rng(2)
    params = {"w": rng.standard_normal((32, 64)).astype(np.float32), "b": rng.standard_normal(32).astype(np.float32)}
    x = rng.standard_normal((6, 64)).astype(np.float32) * 1.5  # some values clip
    return params, {0: SiteRange(scale=0.021, zero_point=120, lo=-2.5, hi=2.8)}, x


@pytest.mark.parametrize("mcpu, feature, intrinsic", [("znver3", "avx2", "dot_8x8_w4_avx2"),
                                                      ("znver4", "avx512vnni", "dot_16x8_w4_vnni")])
def test_w4a8_linear_on_the_int4_dot_kernel_matches_the_integer_reference(mcpu, feature, intrinsic, empty_schedules):
    """The realized Linear, default-scheduled and tensorized with the int4 intrinsic, run here."""
    if not _host_has(feature):
        pytest.skip(f"the host has no {feature} to run {intrinsic} on (the assembly test covers it)")
    from tvmcomp.build import compile_with_database
    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.tune import open_database

    target = _x86_preset_on(mcpu)
    kernels = dot_kernels_for(target)
    assert kernels.int4.intrinsic == intrinsic
    params, ranges, x = _wide_linear_inputs()
    realized = Realize(params, ranges, W4A8, kernels)(WideLinear)
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    executable = compile_with_database(fuse_for_tuning(bound, target.tvm_target()), target, open_database(target))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    want = _w4a8_reference(x, params["w"], params["b"], 0.021, 120)
    # one unit of a group's int32 sum is worth s_x * s_w in the output; float sums of the groups
    # in another order differ in the last bits only: "exact" is far below one unit
    unit = 0.021 * quantize_weight(np.ascontiguousarray(params["w"].T), W4A8.weight)[1].min()
    assert np.abs(got - want).max() < unit / 100


def test_realized_w4a8_linear_holds_packed_bytes_and_group_scales_only():
    params, ranges, _ = _wide_linear_inputs()
    kernels = dot_kernels_for(_x86_preset_on("znver4"))
    realized = Realize(params, ranges, W4A8, kernels)(WideLinear)
    constants = [c.value.numpy() for c in _constants(realized["main"]) if isinstance(c.value, tvm.runtime.Tensor)]
    weights = [c for c in constants if c.size >= 32 * 64 // 2]
    assert [(c.dtype, c.shape) for c in weights] == [(np.uint8, (2, 8, 16, 4))]  # 64 x 32 codes in 1024 bytes
    codes, _ = quantize_weight(np.ascontiguousarray(params["w"].T), W4A8.weight)
    np.testing.assert_array_equal(weights[0], pack_int4_weight(codes, (16, 8)))
    assert any(c.dtype == np.float32 and c.shape == (2, 32) for c in constants)  # a scale per group and output


def test_weight_only_w4_linear_decodes_its_packed_codes_in_the_float_matmul(empty_schedules):
    """w4: float x times the 4-bit codes times their group scales, the codes stored two per byte only."""
    from tvmcomp.build import compile_with_database
    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.tune import open_database

    w4 = get_scheme("w4")
    params, ranges, x = _wide_linear_inputs()
    realized = Realize(params, ranges, replace(w4, weight_rounding="nearest"), DotKernels())(WideLinear)
    constants = [c.value.numpy() for c in _constants(realized["main"]) if isinstance(c.value, tvm.runtime.Tensor)]
    assert [(c.dtype, c.shape) for c in constants if c.size >= 32 * 64 // 2] == [(np.uint8, (2, 32, 16, 1))]
    target = resolve_target("x86")
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    executable = compile_with_database(fuse_for_tuning(bound, target.tvm_target()), target, open_database(target))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    weight = params["w"].T  # [K, N]: a step per (group of 32 rows, column), codes -7..7
    steps = np.stack([clipped_step(rows) for rows in weight.reshape(2, 32, 32)])
    codes = np.clip(np.round(weight.reshape(2, 32, 32) / steps[:, None, :]), -7, 7)
    want = np.einsum("mgk,gkn->mn", x.astype(np.float64).reshape(6, 2, 32), codes * steps[:, None, :]) + params["b"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mcpu, lanes", [("znver4", 16), ("znver3", 8)])  # AVX-512 and AVX2 float vectors
def test_weight_only_kernel_decodes_each_column_panel_once_for_all_rows(mcpu, lanes):
    """The decode sits under the parallel column-panel loop only: not under the matmul's row tiles
    (decoded again per row) nor hoisted out of it (a decoded copy of the whole weight)."""
    from tvm import s_tir, tirx

    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.tune.default_schedules import apply_default_schedules

    params, ranges, _ = _wide_linear_inputs()
    realized = Realize(params, ranges, replace(get_scheme("w4"), weight_rounding="nearest"))(WideLinear)
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    target = _x86_preset_on(mcpu).tvm_target()
    scheduled = apply_default_schedules(fuse_for_tuning(bound, target), target)
    func = next(f for _, f in scheduled.functions_items() if isinstance(f, tirx.PrimFunc) and "int4_decode" in f.script())
    sch = s_tir.Schedule(func)
    decode_loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock("int4_decode"))]
    matmul_loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock("int4_decoded_matmul_update"))]
    shared = [loop for loop in decode_loops if any(loop.same_as(other) for other in matmul_loops)]
    assert len(shared) == 1 and shared[0].kind == tirx.ForKind.PARALLEL
    assert [int(loop.extent) for loop in decode_loops[1:]] == [64, 32 // lanes, lanes]  # K rows x 32 columns, in vectors


def _constants(func):
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, tvm.ir.expr.Constant) else None)
    return found


@pytest.mark.parametrize("mcpu, expected, absent", [("znver3", "vpmaddubsw", "vpdpbusd"),
                                                    ("znver4", "vpdpbusd", "vpmaddubsw")])
def test_w4a8_library_unpacks_nibbles_in_registers_into_the_dot_instruction(mcpu, expected, absent, empty_schedules,
                                                                            tmp_path):
    """AVX2: each 32-byte load of codes is masked (vpand) and shifted (vpsrlw), and both halves feed
    vpmaddubsw, with no unpacked weight anywhere: the library is smaller than the int8 one by
    about half the weight bytes."""
    target = _x86_preset_on(mcpu)
    w4 = build(mlp_source(), target, tmp_path / "w4", QuantOptions("w4a8", samples=4))
    assembly = _disassemble("objdump", tmp_path / "w4" / "model.so")
    instructions = re.findall(r"^ *[0-9a-f]+:\t[^\t\n]*\t(\w+)", assembly, flags=re.M)
    assert instructions.count(expected) >= 16 and absent not in instructions
    if mcpu == "znver3":
        first = instructions.index("vpmaddubsw")
        assert {"vpand", "vpsrlw"} <= set(instructions[first - 12:first])
    int8 = build(mlp_source(), target, tmp_path / "int8", QuantOptions("int8", samples=4))
    weight_bytes = 64 * 512 * 2  # the MLP's two Linears, in int8
    saved = (tmp_path / "int8" / "model.so").stat().st_size - (tmp_path / "w4" / "model.so").stat().st_size
    # half the int8 bytes go, a float scale per 32 weights comes: 0.5 - 4/32 of the int8 bytes saved
    assert saved > 0.3 * weight_bytes
    assert w4.metadata["variant"] == "w4a8"


def test_w4a8_arm_library_feeds_unpacked_nibbles_to_sdot(empty_schedules, tmp_path):
    """Cross-compiled: the emulated board runs it (test_board.py)."""
    build(mlp_source(), resolve_target("arm"), tmp_path / "w4", QuantOptions("w4a8", samples=4))
    assembly = _disassemble("aarch64-linux-gnu-objdump", tmp_path / "w4" / "model.so")
    instructions = re.findall(r"^ *[0-9a-f]+:\t[0-9a-f]+ \t(\w+)", assembly, flags=re.M)
    # the high nibbles minus 8: ushr and sub, or one usra onto -8
    assert instructions.count("sdot") >= 16 and ({"ushr", "usra"} & set(instructions))


def test_w4a8_is_refused_for_a_target_with_no_int4_kernel(tmp_path):
    with pytest.raises(TvmcompError, match=r"w4a8 needs an int4 dot kernel .*'rpi4' has none: use --quant int8"):
        build(mlp_source(), resolve_target("rpi4"), tmp_path / "pkg", QuantOptions("w4a8", samples=4))


@pytest.mark.parametrize("weight, message", [
    (TensorQuant(bits=8, signed=True, symmetric=True, granularity=Granularity.PER_GROUP, group_size=32),
     "weights with a scale per group must be 4-bit"),
    (TensorQuant(bits=4, signed=True, symmetric=True, granularity=Granularity.PER_GROUP, group_size=48),
     "groups of weights must hold 32, 64, 128 channels, not 48"),
    (TensorQuant(bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL), "with float activations, "
     "weights must be 4-bit in groups"),
])
def test_a_grouped_weight_scheme_the_kernels_cannot_run_is_refused(weight, message):
    activation = None if weight.granularity is Granularity.PER_CHANNEL else W4A8.activation  # weight-only
    scheme = QuantScheme("bad-groups", "", weight=weight, activation=activation)
    with pytest.raises(TvmcompError, match=message):
        register_scheme(scheme)


def test_int4_flags_are_checked_before_any_work(tmp_path, capsys):
    from test_cli import assert_user_error

    out = ["-o", str(tmp_path / "p")]
    assert_user_error(capsys, ["build", "--group-size", "64", *out], "--group-size groups int4 weights: add --quant w4a8")
    assert_user_error(capsys, ["build", "--quant", "int8", "--group-size", "64", *out], "add --quant w4a8 or --quant w4")
    assert_user_error(capsys, ["build", "--quant", "w4a8", "--group-size", "48", *out],
                      "--group-size is one of 32, 64, 128 (the int4 kernels read 8 codes at a time")
    assert_user_error(capsys, ["build", "--weight-rounding", "gptq", *out],
                      "--weight-rounding rounds quantized weights: add --quant int8")
    assert_user_error(capsys, ["build", "--quant", "w4a8", "--target", "rpi4", *out],
                      "w4a8 needs an int4 dot kernel")


@pytest.mark.parametrize("scheme", ["w4a8", "w4"])
def test_tuning_leaves_int4_kernels_to_their_default_schedules(scheme, empty_schedules):
    from tvmcomp.build import prepare
    from tvmcomp.tune import extract_tasks

    target = _x86_preset_on("znver3")
    fused = prepare(mlp_source(), target, QuantOptions(scheme, samples=4)).fused
    int4_kernels = [gv.name_hint for gv, _ in fused.functions_items() if "int4" in gv.name_hint]
    tasks = [task.task_name for task in extract_tasks(fused, target)]
    assert len(int4_kernels) == 2 and not any("int4" in name for name in tasks)


@pytest.mark.parametrize("scheme, rounding, asked, calibrated", [("w4a8", None, None, 128), ("w4a8", "nearest", None, 32),
                                                                 ("int8", "gptq", None, 128), ("w4a8", None, 8, 8)])
def test_gptq_calibrates_on_more_batches_unless_told(scheme, rounding, asked, calibrated, monkeypatch):
    from tvmcomp.quant.pipeline import quantize_model

    source = mlp_source()
    taken = []
    make = source.calibration_samples
    monkeypatch.setattr(source, "calibration_samples", lambda count: taken.append(count) or make(count))
    options = QuantOptions(scheme, samples=asked, weight_rounding=rounding)
    document = quantize_model(source, options, "hash", kernels=dot_kernels_for(_x86_preset_on("znver3")))
    assert taken == [calibrated] and document["settings"]["samples"] == calibrated


@pytest.mark.parametrize("count", ["0", "-3"])
def test_a_calibration_count_below_one_is_refused_before_any_work(count, tmp_path, capsys):
    from test_cli import assert_user_error

    assert_user_error(capsys, ["build", "--quant", "w4a8", "--calibration-samples", count, "-o", str(tmp_path / "p")],
                      f"--calibration-samples counts batches to calibrate on: 1 or more, not {count}")
