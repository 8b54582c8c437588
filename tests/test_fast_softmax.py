import numpy as np
import tvm
from tvm import relax

from tvmcomp.passes.fast_softmax import fast_softmax_legalize_map


def _softmax_module(shape):
    """``main(x) = softmax(x, axis=-1)`` for ``x`` of ``shape``."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.softmax(x, axis=-1))
        bb.emit_func_output(y)
    return bb.get()


Softmax = _softmax_module((4, 16, 128))


def _legalized(module=Softmax):
    return relax.transform.LegalizeOps(customize_legalize_map=fast_softmax_legalize_map())(module)


def _scores():
    """Attention-like scores: most keys masked with float32's lowest value, as the HF models do."""
    x = np.random.default_rng(0).normal(0.0, 4.0, (4, 16, 128)).astype(np.float32)
    x[:, :, 21:] = np.finfo(np.float32).min
    x[0, 0, :] = np.finfo(np.float32).min  # a fully masked row: uniform, as with the exact exp
    return x


def test_softmax_kernel_calls_no_libm_exp():
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})  # AVX2: 8 x float32 per ymm register
    stock = tvm.compile(relax.transform.LegalizeOps()(Softmax), target=target)
    assert "expf" in stock.mod.imports[0].inspect_source("asm")  # the scalar libm call we replace
    asm = tvm.compile(_legalized(), target=target).mod.imports[0].inspect_source("asm")
    assert "expf" not in asm
    assert "vfmadd" in asm and "ymm" in asm  # the polynomial, eight lanes at a time


def test_softmax_matches_float64_reference():
    x = _scores()
    shifted = x.astype(np.float64) - x.max(-1, keepdims=True)
    reference = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    executable = tvm.compile(_legalized(), target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert np.all(got[:, :, 21:][1:] == 0.0)  # masked keys get exactly nothing
    np.testing.assert_allclose(got[0, 0], np.full(128, 1 / 128), rtol=1e-6)
    np.testing.assert_allclose(got, reference, rtol=2e-6, atol=1e-9)  # float32 rounding of the row sum


def test_rows_that_do_not_divide_into_vectors_are_padded_and_reduce_in_vector_partial_sums():
    """ViT's 257 tokens: padded with -inf to 272, the max and sum split into vectors (the default
    schedule's partial results); masked and fully masked rows as the exact softmax gives them."""
    from tvmcomp.targets import resolve_target
    from tvmcomp.tune.default_schedules import apply_default_schedules

    kernel = _legalized(_softmax_module((2, 257, 257)))["softmax"]
    assert "softmax_pad" in kernel.script() and "T.int64(272)" in kernel.script()
    target = resolve_target("x86").tvm_target()
    scheduled = apply_default_schedules(tvm.IRModule({"main": kernel.with_attr("global_symbol", "main")}), target)
    assert scheduled["main"].script().count("_rf = T.sblock_alloc_buffer") == 2  # the max and the sum

    x = np.random.default_rng(1).normal(0.0, 4.0, (2, 257, 257)).astype(np.float32)
    x[:, :, 200:] = np.finfo(np.float32).min
    x[1, 7, :] = np.finfo(np.float32).min
    shifted = x.astype(np.float64) - x.max(-1, keepdims=True)
    reference = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    lib = tvm.tirx.build(scheduled, target=target)
    got = tvm.runtime.tensor(np.zeros_like(x))
    lib(tvm.runtime.tensor(x), got)
    got = got.numpy()
    assert np.all(got[:, :, 200:][0] == 0.0)
    np.testing.assert_allclose(got[1, 7], np.full(257, 1 / 257), rtol=1e-6)
    np.testing.assert_allclose(got, reference, rtol=2e-6, atol=1e-9)
