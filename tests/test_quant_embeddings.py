"""The embedding-lookup op rule: the rewrite of a table lookup, and the rows it reads against NumPy."""

from dataclasses import replace

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.script import relax as R

from conftest import run_imported
from test_int4 import clipped_step
from tvmcomp.frontend import import_torch
from tvmcomp.quant.grids import quantize_weight
from tvmcomp.quant.nibbles import pack_nibbles, unpack_nibbles
from tvmcomp.quant.ops.embedding import EmbeddingLookup
from tvmcomp.quant.realize import Realize
from tvmcomp.quant.schemes import get_scheme

ROWS = get_scheme("int8").embedding


def QuantizeEmbeddings(params, rows, skip=None, min_rows=1024):
    """Realize with the embedding-lookup rule only, tables of ``min_rows`` or more in ``rows``' codes."""
    return Realize(params, {}, replace(get_scheme("int8"), embedding=rows), skip=skip,
                   rules=[EmbeddingLookup(min_rows)])


@tvm.script.ir_module
class Lookup:
    @R.function
    def main(ids: R.Tensor((3,), "int64"), x: R.Tensor((3, 4), "float32"), table: R.Tensor((10, 4), "float32")):
        R.func_attr({"num_input": 2})
        with R.dataflow():
            rows = R.take(table, ids, axis=0, mode="fast")
            picked = R.take(x, ids, axis=0)  # not a weight table: stays as it is
            out = R.add(rows, x)
            R.output(out, picked)
        return (out, picked)


def _table():
    return {"table": (np.random.default_rng(0).standard_normal((10, 4)) * np.arange(1, 11)[:, None]).astype(np.float32)}


def _expected(codes: np.ndarray, scales: np.ndarray) -> tvm.IRModule:
    builder = relax.BlockBuilder()
    ids = relax.Var("ids", relax.TensorType((3,), "int64"))
    x = relax.Var("x", relax.TensorType((3, 4), "float32"))
    table = relax.Var("table", relax.TensorType((10, 4), "float32"))
    with builder.function("main", [ids, x, table], attrs={"num_input": 2}):
        with builder.dataflow():
            row_codes = builder.emit(relax.op.take(relax.const(codes), ids, axis=0, mode="fast"))
            row_scales = builder.emit(relax.op.take(relax.const(scales), ids, axis=0, mode="fast"))
            as_float = builder.emit(relax.op.astype(row_codes, "float32"))
            rows = builder.emit(relax.op.multiply(as_float, row_scales))
            picked = builder.emit_output(relax.op.take(x, ids, axis=0))
            out = builder.emit_output(relax.op.add(rows, x))
        builder.emit_func_output(relax.Tuple([out, picked]))
    return builder.get()


def test_a_weight_table_lookup_reads_int8_rows_and_row_scales():
    params = _table()
    codes, scales = quantize_weight(params["table"], ROWS, channel_axis=0)
    assert codes.dtype == np.int8 and scales.shape == (10,)
    tvm.ir.assert_structural_equal(QuantizeEmbeddings(params, ROWS, min_rows=10)(Lookup),
                                   _expected(codes, scales.reshape(-1, 1)))


def test_skipped_and_small_tables_stay_float():
    tvm.ir.assert_structural_equal(QuantizeEmbeddings(_table(), ROWS, skip=["tab*"], min_rows=10)(Lookup), Lookup)
    tvm.ir.assert_structural_equal(QuantizeEmbeddings(_table(), ROWS)(Lookup), Lookup)  # 10 rows < 1024


def test_quantized_lookup_matches_numpy_rows_exactly():
    params = _table()
    quantized = QuantizeEmbeddings(params, ROWS, min_rows=10)(Lookup)
    executable = tvm.compile(relax.transform.BindParams("main", {"table": tvm.runtime.tensor(params["table"])})(quantized),
                             target=tvm.target.Target({"kind": "llvm"}))
    ids, x = np.array([9, 0, 4], np.int64), np.zeros((3, 4), np.float32)
    out, _ = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(ids), tvm.runtime.tensor(x))
    codes, scales = quantize_weight(params["table"], ROWS, channel_axis=0)
    np.testing.assert_array_equal(out.numpy(), codes[ids].astype(np.float32) * scales[ids, None])
    # symmetric per-row int8: each value within half a step of its row's scale
    assert np.all(np.abs(out.numpy() - params["table"][ids]) <= scales[ids, None] / 2 + 1e-6)


NIBBLE_ROWS = replace(ROWS, bits=4)


def test_nibble_packing_holds_code_plus_8_of_both_row_halves_bit_exactly():
    codes = np.random.default_rng(1).integers(-8, 8, (5, 6)).astype(np.int8)
    packed = pack_nibbles(codes)
    # byte i: code i + 8 in the low nibble, code i + 3 + 8 in the high one
    want = (codes[:, :3].astype(np.int32) + 8) + (codes[:, 3:].astype(np.int32) + 8) * 16
    np.testing.assert_array_equal(packed, want.astype(np.uint8))
    assert packed.dtype == np.uint8 and packed.shape == (5, 3)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((5, 3), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(unpack_nibbles(x))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(packed)).numpy().astype(np.int32) - 8, codes)


def test_a_4_bit_table_is_stored_two_codes_a_byte_and_unpacked_after_the_lookup():
    params = _table()
    quantized = QuantizeEmbeddings(params, NIBBLE_ROWS, min_rows=10)(Lookup)
    stored = [b.value.args[0].value.numpy() for b in quantized["main"].body.blocks[0].bindings
              if isinstance(b.value, relax.Call) and b.value.op.name == "relax.take"
              and isinstance(b.value.args[0], tvm.ir.expr.Constant)]
    assert stored[0].dtype == np.uint8 and stored[0].shape == (10, 2)  # 4 codes a row, 2 bytes
    executable = tvm.compile(relax.transform.BindParams("main", {"table": tvm.runtime.tensor(params["table"])})(quantized),
                             target=tvm.target.Target({"kind": "llvm"}))
    ids, x = np.array([9, 0, 4], np.int64), np.zeros((3, 4), np.float32)
    out, _ = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(ids), tvm.runtime.tensor(x))
    # symmetric 4-bit per row: s = max|row| / 7, codes clip(round(row / s), -7, 7)
    table = params["table"]
    s = np.abs(table).max(axis=1, keepdims=True) / np.float32(7)
    codes = np.clip(np.round(table / s), -7, 7)
    np.testing.assert_allclose(out.numpy(), (codes * s)[ids], rtol=1e-6)


class EmbedThenLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.words, self.proj = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 8)

    def forward(self, ids):
        return self.proj(torch.nn.functional.layer_norm(self.words(ids), (16,)))


def test_a_model_with_a_quantized_embedding_stays_close_to_float():
    torch.manual_seed(0)
    model = EmbedThenLinear().eval()
    ids = {"ids": np.random.default_rng(1).integers(0, 50, (2, 12)).astype(np.int64)}
    imported = import_torch(model, ids)
    imported.mod = QuantizeEmbeddings(imported.params, ROWS, min_rows=50)(imported.mod)
    assert "int8" in imported.mod["main"].script()
    (got,) = run_imported(imported, ids)
    want = model(torch.from_numpy(ids["ids"])).detach().numpy()
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()


GROUPED_NIBBLE_ROWS = get_scheme("w4a8").embedding  # 4 bits, a step per 32 entries of a row, clipped


@tvm.script.ir_module
class WideLookup:
    @R.function
    def main(ids: R.Tensor((2, 3), "int64"), table: R.Tensor((12, 64), "float32")):
        with R.dataflow():
            rows = R.take(table, ids, axis=0)
            R.output(rows)
        return rows


def test_rows_in_4_bits_with_a_scale_per_32_entries_read_back_as_numpy_rounds_them():
    rng = np.random.default_rng(4)
    table = (rng.standard_normal((12, 64)) * rng.uniform(0.1, 3, (12, 2)).repeat(32, axis=1)).astype(np.float32)
    quantized = QuantizeEmbeddings({"table": table}, GROUPED_NIBBLE_ROWS, min_rows=10)(WideLookup)
    found = []
    relax.analysis.post_order_visit(quantized["main"], found.append)
    constants = [e.value.numpy() for e in found if isinstance(getattr(e, "value", None), tvm.runtime.Tensor)]
    assert sorted((c.dtype.str, c.shape) for c in constants if c.ndim == 2) == [("<f4", (12, 2)), ("|u1", (12, 32))]
    bound = relax.transform.BindParams("main", {"table": tvm.runtime.tensor(table)})(quantized)
    vm = relax.VirtualMachine(tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    ids = np.array([[11, 0, 5], [5, 3, 3]], np.int64)
    got = vm["main"](tvm.runtime.tensor(ids)).numpy()

    groups = table.reshape(12, 2, 32)
    # a step per row and 32 entries, clipped as a Linear's 4-bit groups are (test_int4.clipped_step)
    steps = np.stack([clipped_step(groups[:, g].T) for g in range(2)], axis=1)[:, :, None]
    want = (np.clip(np.round(groups / steps), -7, 7) * steps).reshape(12, 64)[ids]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
