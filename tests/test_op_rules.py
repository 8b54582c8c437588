"""The op-rule registry: one rule per op kind, roles naming rules, and a rule written outside the
package quantizing an op end to end through Annotate and Realize."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmcomp.errors import TvmcompError
from tvmcomp.quant.annotate import Annotate, quant_sites
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.ops import OP_RULES, Operand, OpRule, register_op_rule, rule_for_role
from tvmcomp.quant.realize import Realize
from tvmcomp.quant.schemes import get_scheme

INT8 = get_scheme("int8")


def test_the_registry_has_a_rule_per_op_kind_and_each_role_names_its_rule():
    assert list(OP_RULES) == ["linear", "conv2d", "attention_scores", "attention_values", "embedding_lookup"]
    for rule in OP_RULES.values():
        assert all(rule_for_role(role) is rule for role in rule.roles)
    assert OP_RULES["embedding_lookup"].roles == ()  # nothing of a lookup varies at run time but integer ids


def test_a_rule_taking_a_registered_role_and_an_unknown_role_are_refused():
    class Clash(OpRule):
        name, ops, roles = "clash", ("relax.matmul",), ("probs",)

    with pytest.raises(TvmcompError, match="op rule 'clash' cannot be registered: role 'probs' is attention_values's"):
        register_op_rule(Clash())
    assert "clash" not in OP_RULES
    with pytest.raises(TvmcompError, match="no op rule realizes quant sites of role 'gamma'"):
        rule_for_role("gamma")


@tvm.script.ir_module
class Attention:
    @R.function
    def main(q: R.Tensor((2, 4, 8), "float32"), k: R.Tensor((2, 8, 4), "float32"), v: R.Tensor((2, 4, 8), "float32")):
        with R.dataflow():
            s = R.matmul(q, k, out_dtype="float32")
            p = R.nn.softmax(s, axis=-1)
            o = R.matmul(p, v, out_dtype="float32")
            R.output(o)
        return o


@tvm.script.ir_module
class AttentionAnnotated:
    @R.function
    def main(q: R.Tensor((2, 4, 8), "float32"), k: R.Tensor((2, 8, 4), "float32"), v: R.Tensor((2, 4, 8), "float32")):
        R.func_attr({"tvmcomp.quant_sites": ["bmm_0:lhs", "bmm_0:rhs", "bmm_1:probs", "bmm_1:values"]})
        with R.dataflow():
            qs = R.call_pure_packed("tvmcomp.quant_site", q, R.prim_value(0), ty_args=(R.Tensor((2, 4, 8), "float32"),))
            ks = R.call_pure_packed("tvmcomp.quant_site", k, R.prim_value(1), ty_args=(R.Tensor((2, 8, 4), "float32"),))
            s = R.matmul(qs, ks, out_dtype="float32")
            p = R.nn.softmax(s, axis=-1)
            ps = R.call_pure_packed("tvmcomp.quant_site", p, R.prim_value(2), ty_args=(R.Tensor((2, 4, 4), "float32"),))
            vs = R.call_pure_packed("tvmcomp.quant_site", v, R.prim_value(3), ty_args=(R.Tensor((2, 4, 8), "float32"),))
            o = R.matmul(ps, vs, out_dtype="float32")
            R.output(o)
        return o


def test_q_k_and_p_v_are_told_apart_by_what_the_left_operand_holds():
    tvm.ir.assert_structural_equal(Annotate([])(Attention), AttentionAnnotated)
    # only the attention_values rule: Q @ K^T is not its op, yet keeps counting in the names
    only_values = Annotate([], rules=[OP_RULES["attention_values"]])(Attention)
    assert [f"{s.name}:{s.role}" for s in quant_sites(only_values)] == ["bmm_0:probs", "bmm_0:values"]


class WeightScale(OpRule):
    """A rule as a user would add one: ``x * g`` with ``g`` a 1-D weight (a learned channel scale),
    ``x`` as the scheme's activation codes and ``g`` as int8 with one scale, multiplied in int32."""

    name, ops, roles = "weight_scale", ("relax.multiply",), ("scaled",)

    def match(self, graph, call):
        return [Operand(0, call.args[1].name, "scaled")] if graph.is_weight(call.args[1], 1) else None

    def realize(self, ctx, call, operands):
        site, x = operands[0]
        gamma = ctx.params[site.name]
        g_scale = np.abs(gamma).max() / 127
        act = ctx.ranges[site.index]
        xq = ctx.builder_.emit(relax.op.astype(ctx.quantize(x, site, "uint8", act.zero_point), "int32"))
        centred = ctx.builder_.emit(relax.op.subtract(xq, relax.const(np.int32(act.zero_point))))
        acc = ctx.builder_.emit(relax.op.multiply(centred, relax.const(np.round(gamma / g_scale).astype(np.int32))))
        return ctx.dequantize(acc, np.full(len(gamma), np.float32(act.scale) * np.float32(g_scale)))


@tvm.script.ir_module
class Scale:
    @R.function
    def main(x: R.Tensor((3, 6), "float32"), g: R.Tensor((6,), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.multiply(x, g)
            R.output(y)
        return y


def test_a_rule_outside_the_package_quantizes_its_op_through_annotate_and_realize():
    rng = np.random.default_rng(0)
    x, gamma = rng.uniform(-1, 2, (3, 6)).astype(np.float32), rng.uniform(0.5, 1.5, 6).astype(np.float32)
    rule = WeightScale()
    annotated = Annotate(["g"], rules=[rule])(Scale)
    assert [f"{s.name}:{s.role}" for s in quant_sites(annotated)] == ["g:scaled"]
    s, z = 3.0 / 255, 85  # [-1, 2] in uint8
    realized = Realize({"g": gamma}, {0: SiteRange(scale=s, zero_point=z, lo=-1.0, hi=2.0)}, INT8,
                       rules=[rule])(annotated)
    text = realized["main"].script()
    assert "call_pure_packed" not in text and '"int32"' in text
    bound = relax.transform.BindParams("main", {"g": tvm.runtime.tensor(gamma)})(realized)
    vm = relax.VirtualMachine(tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    # the integer formula: xq = clip(round(x / s) + z, 0, 255), gq = round(g / (max|g| / 127)),
    # y = float32((xq - z) * gq) * float32(s * max|g| / 127)
    xq = np.clip(np.round(x / np.float32(s)) + z, 0, 255).astype(np.int32)
    g_step = np.abs(gamma).max() / 127
    gq = np.round(gamma / g_step).astype(np.int32)
    want = ((xq - z) * gq).astype(np.float32) * (np.float32(s) * np.float32(g_step))
    np.testing.assert_array_equal(got, want)
    # within half a step of each factor: |x| <= 2 here
    assert np.abs(got - x * gamma).max() <= s / 2 * gamma.max() + g_step / 2 * 2 + 1e-6


def test_a_rule_that_declines_leaves_its_op_float_on_the_unwrapped_operand():
    class Declines(WeightScale):
        def realize(self, ctx, call, operands):
            return None

    rule = Declines()
    realized = Realize({"g": np.ones(6, np.float32)}, {0: SiteRange(scale=0.1, zero_point=0, lo=0.0, hi=1.0)}, INT8,
                       rules=[rule])(Annotate(["g"], rules=[rule])(Scale))
    tvm.ir.assert_structural_equal(realized["main"].without_attr("num_input"), Scale["main"].without_attr("num_input"))
