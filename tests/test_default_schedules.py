"""Default schedules (tvmcomp.tune.default_schedules): which rule takes which kernel, the loop nest
each rule makes, and that the scheduled kernels compute what the unscheduled ones do."""

import re

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm.script import tirx as T

from tvmcomp.tune.default_schedules import Elementwise, Matmul, apply_default_schedules, unscheduled_kernels

HOST = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})  # AVX2: 8 float lanes, runs on any AVX2 host


@T.prim_func(s_tir=True)
def dense_bias(x: T.Buffer((16, 32), "float32"), w: T.Buffer((32, 64), "float32"), b: T.Buffer((64,), "float32"),
               y: T.Buffer((16, 64), "float32")):
    mm = T.sblock_alloc_buffer((16, 64), "float32")
    for i, j, k in T.grid(16, 64, 32):
        with T.sblock("matmul"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                mm[vi, vj] = T.float32(0)
            mm[vi, vj] = mm[vi, vj] + x[vi, vk] * w[vk, vj]
    for i, j in T.grid(16, 64):
        with T.sblock("bias"):
            vi, vj = T.axis.remap("SS", [i, j])
            y[vi, vj] = mm[vi, vj] + b[vj]


@T.prim_func(s_tir=True)
def scale_shift(x: T.Buffer((64, 256), "float32"), y: T.Buffer((64, 256), "float32")):
    scaled = T.sblock_alloc_buffer((64, 256), "float32")
    for i, j in T.grid(64, 256):
        with T.sblock("scale"):
            vi, vj = T.axis.remap("SS", [i, j])
            scaled[vi, vj] = x[vi, vj] * T.float32(2)
    for i, j in T.grid(64, 256):
        with T.sblock("shift"):
            vi, vj = T.axis.remap("SS", [i, j])
            y[vi, vj] = scaled[vi, vj] + T.float32(1)


@T.prim_func(s_tir=True)
def row_max(x: T.Buffer((64, 128), "float32"), y: T.Buffer((64,), "float32")):
    for i, k in T.grid(64, 128):
        with T.sblock("max"):
            vi, vk = T.axis.remap("SR", [i, k])
            with T.init():
                y[vi] = T.float32(-3.4e38)
            y[vi] = T.max(y[vi], x[vi, vk])


def _schedule(func):
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    return apply_default_schedules(mod, HOST)


def _loops(func) -> list[tuple[str, int]]:
    """(kind, extent) of each loop of ``func`` in its TVMScript, outermost first: ("parallel", 8)."""
    return [(kind or "serial", int(extent))
            for kind, extent in re.findall(r"for \w+ in (?:T\.(parallel|vectorized|unroll)|range)\((\d+)\)",
                                           func.script())]


def _run(mod, *arrays):
    lib = tvm.tirx.build(mod, target=HOST)
    tensors = [tvm.runtime.tensor(a) for a in arrays]
    lib(*tensors)
    return tensors[-1].numpy()


def test_matmul_rule_makes_one_parallel_nest_with_vector_register_tiles_and_the_epilogue_inside():
    after = _schedule(dense_bias)["main"]
    assert after.attrs["tirx.is_scheduled"] and unscheduled_kernels(tvm.IRModule({"main": after})) == []
    loops = _loops(after)
    # one nest: 2 column panels x 4 row tiles in parallel, everything else inside it (the bias too)
    assert loops[0] == ("parallel", 8) and [kind for kind, _ in loops].count("parallel") == 1
    assert loops.count(("parallel", 8)) == 1 and after.script().count("T.sblock(\"bias\")") == 1
    # the register tile: 4 rows x 4 AVX2 vectors of 8 floats, unrolled, for the init and the update;
    # then the reduction loop of 32 and the bias epilogue on the same tile, vectorized
    assert loops[1:4] == [("unroll", 4), ("unroll", 4), ("vectorized", 8)]
    assert loops[4:8] == [("serial", 32), ("unroll", 4), ("unroll", 4), ("vectorized", 8)]
    assert loops[-1] == ("vectorized", 8)


def test_matmul_rule_computes_the_matmul():
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((16, 32), (32, 64), (64,)))
    got = _run(_schedule(dense_bias), x, w, b, np.zeros((16, 64), np.float32))
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-5, atol=1e-5)


def test_elementwise_rule_inlines_the_chain_and_vectorizes():
    after = _schedule(scale_shift)["main"]
    assert "scale" not in after.script().replace("scale_shift", "")  # inlined into shift
    # 16384 elements: big enough for the pool; one fused loop of 8-float vectors
    assert _loops(after) == [("parallel", 2048), ("vectorized", 8)]
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    np.testing.assert_allclose(_run(_schedule(scale_shift), x, np.zeros_like(x)), x * 2 + 1, rtol=1e-6)


@T.prim_func(s_tir=True)
def quantize_pad(x: T.Buffer((1, 6, 17, 17), "float32"), y: T.Buffer((6, 17, 20), "int8")):
    """An attention's probabilities quantized and padded for the dot kernel (vit-s: 257 -> 260 columns)."""
    for h, i, j in T.grid(6, 17, 20):
        with T.sblock("pad"):
            vh, vi, vj = T.axis.remap("SSS", [h, i, j])
            y[vh, vi, vj] = T.if_then_else(vj < 17, T.Cast("int8", T.max(T.min(T.round(x[0, vh, vi, vj] * T.float32(127)),
                                                                                  T.float32(127)), T.float32(-128))), T.int8(0))


def test_elementwise_rule_keeps_rows_that_vectors_would_straddle():
    after = _schedule(quantize_pad)["main"]
    # rows of 20 int8 are no whole number of 32-lane vectors: a vector along the fused loop would
    # straddle rows; the rows stay whole, for LLVM to vectorize
    assert "for h_i_fused, j in T.grid(102, 20):" in after.script()
    x = np.random.default_rng(2).uniform(-1.5, 1.5, (1, 6, 17, 17)).astype(np.float32)
    want = np.zeros((6, 17, 20), np.int8)
    want[:, :, :17] = np.clip(np.round(x[0] * 127), -128, 127)
    np.testing.assert_array_equal(_run(_schedule(quantize_pad), x, np.zeros((6, 17, 20), np.int8)), want)


def test_matmul_rule_leaves_other_reductions_to_the_next_rule():
    assert Matmul().apply(row_max, HOST, False) is None
    after = _schedule(row_max)["main"]  # Elementwise: rows in parallel, the reduction kept serial
    assert _loops(after) == [("parallel", 64), ("serial", 128)]
    x = np.random.default_rng(2).standard_normal((64, 128)).astype(np.float32)
    np.testing.assert_array_equal(_run(_schedule(row_max), x, np.zeros(64, np.float32)), x.max(axis=1))


def test_a_kernel_already_scheduled_by_a_record_is_left_alone():
    scheduled = dense_bias.with_attr("global_symbol", "main").with_attr("tirx.is_scheduled", True)
    after = apply_default_schedules(tvm.IRModule({"main": scheduled}), HOST)["main"]
    assert tvm_ffi.structural_equal(after, scheduled)


def test_a_kernel_written_as_loops_is_kept_less_the_pragma_llvm_does_not_know():
    """TOPI's scatter (token pruning's output) is one opaque block of parallel loops: kept as it
    is, without ``pragma_scope`` (LLVM warned on every build), and it still scatters."""
    from tvm import te, topi

    data, index, rows = (te.placeholder((1, 16, 8), name="data"), te.placeholder((1, 4, 8), "int64", name="index"),
                         te.placeholder((1, 4, 8), name="rows"))
    scatter = te.create_prim_func([data, index, rows, topi.scatter_elements(data, index, rows, 1)])
    assert "pragma_scope" in scatter.script()
    after = _schedule(scatter)
    assert "pragma_scope" not in after["main"].script() and ("parallel", 128) in _loops(after["main"])
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((1, 16, 8)).astype(np.float32), rng.standard_normal((1, 4, 8)).astype(np.float32)
    positions = np.array([3, 0, 15, 7])
    want = x.copy()
    want[0, positions] = y[0]
    got = _run(after, x, np.broadcast_to(positions[None, :, None], (1, 4, 8)).astype(np.int64).copy(), y,
               np.zeros_like(x))
    np.testing.assert_array_equal(got, want)


def test_elementwise_rule_takes_any_kernel():
    assert Elementwise().apply(dense_bias, HOST, False) is not None


@pytest.mark.skipif("avx512vnni" not in open("/proc/cpuinfo").read().replace("avx512_vnni", "avx512vnni"),
                    reason="the host has no AVX-512 VNNI to run the kernel on (the asm is checked in test_dot_kernels)")
def test_default_vnni_linear_matches_the_integer_reference_exactly(empty_schedules):
    """No record: the packed int8 Linear is tensorized with vpdpbusd by the Matmul rule, and its
    integers are exact (u8 x s8 -> s32 sums of 4 products cannot overflow)."""
    from tvm import relax

    from models_for_tests import int8_linear_reference
    from test_quant_passes import INT8, LinearAnnotated
    from tvmcomp import tune as tuning
    from tvmcomp.build import compile_with_database
    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.quant.calibrate import SiteRange
    from tvmcomp.quant.dot_kernels import DotKernels, dot_kernel_for
    from tvmcomp.quant.grids import quantize_weight
    from tvmcomp.quant.realize import Realize
    from tvmcomp.targets import resolve_target

    target = resolve_target("x86-znver4")
    kernel = dot_kernel_for(target)
    assert kernel.intrinsic == "dot_16x4_vnni"
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32)}
    x = rng.standard_normal((2, 8)).astype(np.float32) * 1.5
    realized = Realize(params, {0: SiteRange(0.021, 120, -2.5, 2.8)}, INT8, DotKernels(kernel))(LinearAnnotated)
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    fused = fuse_for_tuning(bound, target.tvm_target())
    executable = compile_with_database(fused, target, tuning.open_database(target))
    assert "vpdpbusd" in executable.mod.imports[0].inspect_source("asm")
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = int8_linear_reference(x, params["w"], params["b"], 0.021, 120, INT8.activation, INT8.weight)
    unit = 0.021 * quantize_weight(np.ascontiguousarray(params["w"].T), INT8.weight)[1].min()
    assert np.abs(got - want).max() < unit / 100  # one int32 unit is worth 0.021 * s_w; FMA may move last bits


def test_gpu_targets_get_dlight_thread_bound_schedules_for_every_kernel():
    """No GPU here to run them: every kernel of a model must be scheduled, each with thread bindings
    (a CPU loop nest in a CUDA kernel would fail to build)."""
    from models_for_tests import mlp_source
    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.targets import resolve_target

    target = resolve_target("cuda").tvm_target()
    after = apply_default_schedules(fuse_for_tuning(mlp_source().imported.bound(), target), target)
    kernels = [f for _, f in after.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) >= 2 and unscheduled_kernels(after) == []
    assert all('"threadIdx.x"' in f.script() for f in kernels)


@T.prim_func(s_tir=True)
def odd_matmul(x: T.Buffer((10, 16), "float32"), w: T.Buffer((16, 20), "float32"), y: T.Buffer((10, 20), "float32")):
    for i, j, k in T.grid(10, 20, 16):
        with T.sblock("matmul"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                y[vi, vj] = T.float32(0)
            y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vk, vj]


@T.prim_func(s_tir=True)
def patch_conv(x: T.Buffer((1, 2, 8, 8), "float32"), w: T.Buffer((8, 2, 2, 2), "float32"),
               y: T.Buffer((1, 8, 4, 4), "float32")):
    for n, f, h, v, c, r, s in T.grid(1, 8, 4, 4, 2, 2, 2):
        with T.sblock("conv"):
            vn, vf, vh, vv, vc, vr, vs = T.axis.remap("SSSSRRR", [n, f, h, v, c, r, s])
            with T.init():
                y[vn, vf, vh, vv] = T.float32(0)
            y[vn, vf, vh, vv] = y[vn, vf, vh, vv] + x[vn, vc, vh * 2 + vr, vv * 2 + vs] * w[vf, vc, vr, vs]


def test_a_matmul_whose_rows_and_columns_fit_no_tile_is_padded_to_whole_tiles():
    """ViT's 257 tokens: 20 columns fit no 32-column tile, so they are padded to 32 (a zero-padded copy
    of w, the valid part of the result copied out) instead of falling back to scalar code; the 10 rows
    fit 2-row tiles and stay."""
    after = _schedule(odd_matmul)["main"].script()
    assert "w_pad = T.sblock_alloc_buffer((16, 32))" in after and "y_pad" in after and "x_pad" not in after
    assert "T.vectorized(8)" in after
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((10, 16)).astype(np.float32), rng.standard_normal((16, 20)).astype(np.float32)
    np.testing.assert_allclose(_run(_schedule(odd_matmul), x, w, np.zeros((10, 20), np.float32)), x @ w,
                               rtol=1e-5, atol=1e-5)


def test_a_convolution_vectorizes_its_innermost_output_axis_under_the_reduction():
    after = _schedule(patch_conv)["main"]
    loops = _loops(after)
    assert loops[0][0] == "parallel" and ("vectorized", 4) in loops  # 4 output columns per vector
    assert ("unroll", 4) in loops  # 4 output rows share the weights they read
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 8, 8)).astype(np.float32), rng.standard_normal((8, 2, 2, 2)).astype(np.float32)
    patches = x.reshape(1, 2, 4, 2, 4, 2).transpose(0, 2, 4, 1, 3, 5).reshape(16, 8)  # [h*v, c*r*s]
    want = (patches @ w.reshape(8, 8).T).T.reshape(1, 8, 4, 4)
    np.testing.assert_allclose(_run(_schedule(patch_conv), x, w, np.zeros((1, 8, 4, 4), np.float32)), want,
                               rtol=1e-5, atol=1e-5)


def _row_kernel(kind: str, shape=(12, 128, 128)):
    """A layer norm over the last axis, or the softmax the graph is lowered with (fast exponential)."""
    from tvm import te, topi

    x = te.placeholder(shape, "float32", name="x")
    if kind == "layer_norm":
        gamma, beta = te.placeholder(shape[-1:], "float32"), te.placeholder(shape[-1:], "float32")
        return te.create_prim_func([x, gamma, beta, topi.nn.layer_norm(x, gamma, beta, axis=[-1], epsilon=1e-12)])
    return te.create_prim_func([x, topi.nn.fast_softmax(x, axis=-1)])


@pytest.mark.parametrize("kind", ["layer_norm", "softmax"])
def test_row_reductions_sum_into_vectors_of_partial_sums_in_parallel_rows(kind):
    """Each row's sums (and softmax's max) run as 8 partial results in one AVX2 vector, added up at
    the end, instead of one chain of scalar adds; the result is the row formula's."""
    after = _schedule(_row_kernel(kind))["main"]
    text = after.script()
    assert text.count("_rf = T.sblock_alloc_buffer") == 2  # mean and variance sums / max and exp sum
    assert _loops(after)[0] == ("parallel", 12 * 128)
    assert len(re.findall(r"in T\.vectorized\(8\):\n\s+with T\.sblock\(\"\w+_rf\"\)", text)) == 2
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 128, 128)).astype(np.float32) * 3
    if kind == "layer_norm":
        gamma, beta = rng.standard_normal(128).astype(np.float32), rng.standard_normal(128).astype(np.float32)
        got = _run(tvm.IRModule({"main": after}), x, gamma, beta, np.zeros_like(x))
        want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12) * gamma + beta
    else:
        got = _run(tvm.IRModule({"main": after}), x, np.zeros_like(x))
        e = np.exp(x - x.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_row_kernel_with_two_outputs_gets_a_parallel_row_loop_for_each():
    """--per-token's kernel writes the codes and each row's step and zero point: TIR cannot compute
    an output at another's row loop, so each output gets its own, with its min and max as vector
    partial results; the codes are the formula's written out in test_per_token."""
    from tvm import te

    from test_per_token import _token_codes
    from tvmcomp.quant.schemes import get_scheme
    from tvmcomp.quant.token_steps import token_quantize

    x = te.placeholder((2, 64, 128), "float32", name="x")
    after = _schedule(te.create_prim_func([x, *token_quantize(x, get_scheme("int8").activation, "uint8")]))["main"]
    assert [loop for loop in _loops(after) if loop[0] == "parallel"] == [("parallel", 128), ("parallel", 128)]
    text = after.script()
    assert text.count("_rf = T.sblock_alloc_buffer") == 2 and text.count("_rf_1 = T.sblock_alloc_buffer") == 2
    assert len(re.findall(r"in T\.vectorized\(8\):\n\s+with T\.sblock\(\"\w+_rf\"\)", text)) == 4
    data = np.random.default_rng(4).standard_normal((2, 64, 128)).astype(np.float32)
    data[0, :5] *= 30
    data[1, 3] = 0.0
    tensors = [tvm.runtime.tensor(a) for a in (data, np.zeros(data.shape, np.uint8), np.zeros((2, 64, 2), np.float32))]
    tvm.tirx.build(tvm.IRModule({"main": after}), target=HOST)(*tensors)
    codes, steps, zeros = _token_codes(data)
    np.testing.assert_array_equal(tensors[1].numpy(), codes)
    np.testing.assert_array_equal(tensors[2].numpy(), np.concatenate([steps, zeros.astype(np.float32)], axis=-1))
