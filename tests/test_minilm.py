"""The bundled default model: both import paths and the built package reproduce PyTorch."""

import numpy as np
import pytest
import torch

import tvmcomp
from conftest import max_abs_diff, run_imported
from tvmcomp.cli import main
from tvmcomp.frontend import import_file
from tvmcomp.frontend.torch_frontend import torch_reference
from tvmcomp.source import load_source
from tvmcomp.targets import resolve_target
from tvmcomp.tune import serving_folders

TOL = 1e-4


@pytest.fixture(scope="module")
def minilm():
    return load_source("minilm")


def test_minilm_inputs_are_real_tokenized_text(minilm):
    ids, mask = minilm.example_inputs["input_ids"], minilm.example_inputs["attention_mask"]
    assert ids.shape == mask.shape == (1, 128) and ids.dtype == np.int64
    assert ids[0, 0] == 101 and 5 < mask.sum() < 128  # [CLS] first, then padding


def test_minilm_torch_import_matches_pytorch(minilm):
    reference = torch_reference(minilm.torch_module, minilm.example_inputs)
    assert max_abs_diff(run_imported(minilm.imported, minilm.example_inputs), reference) <= TOL


def test_minilm_onnx_import_matches_pytorch(minilm, tmp_path):
    path = tmp_path / "minilm.onnx"
    args = tuple(torch.from_numpy(v) for v in minilm.example_inputs.values())
    torch.onnx.export(minilm.torch_module, args, str(path), input_names=list(minilm.example_inputs),
                      output_names=["last_hidden_state"], dynamo=True, verbose=False)
    imported = import_file(path)
    reference = torch_reference(minilm.torch_module, minilm.example_inputs)
    assert max_abs_diff(run_imported(imported, minilm.example_inputs), reference) <= TOL


def test_minilm_build_uses_committed_records_and_matches_pytorch(minilm, tmp_path, capsys):
    """Where records serve this CPU every kernel must use them; elsewhere default schedules serve."""
    committed = bool(serving_folders(resolve_target("x86")))  # this CPU's records, or a same-ISA CPU's
    assert main(["build", "--model", "minilm", "--target", "x86", "-o", str(tmp_path / "pkg")]) == 0
    assert "[tune]" not in capsys.readouterr().err  # a build never tunes unless asked
    package = tvmcomp.load(tmp_path / "pkg")
    assert (package.metadata["default_scheduled_kernels"] == 0) == committed
    outputs = package.run(**minilm.example_inputs)
    assert max_abs_diff(outputs, torch_reference(minilm.torch_module, minilm.example_inputs)) <= TOL
    assert package.metadata["library_bytes"] > 0.95 * package.metadata["float_weight_bytes"] > 80e6


@pytest.mark.slow
def test_minilm_int8_is_a_quarter_of_the_float_size_and_stays_close_to_float(tmp_path):
    """The whole int8 model on real text (tvmcomp.evaluate). Bounds: the int8 issue's mean cosine
    >= 0.99; min cosine >= 0.97; probe drop <= 2 pt (2 of the 100 held-out sentences: the drop moves
    a whole sentence at a time, and the bench measured 0); WordSim Spearman >= 0.98."""
    from tvmcomp.evaluate import evaluate_package

    assert main(["build", "--model", "minilm", "--target", "x86", "--quant", "int8", "-o", str(tmp_path / "pkg")]) == 0
    package = tvmcomp.load(tmp_path / "pkg")
    assert package.metadata["library_bytes"] < 0.3 * package.metadata["float_weight_bytes"]  # tables int8 too
    result = evaluate_package(tmp_path / "pkg")
    assert result["embedding_cosine_mean"] >= 0.99 and result["embedding_cosine_min"] >= 0.97
    assert round(result["probe_accuracy_drop_pt"], 6) <= 2.0  # 2 sentences: (a - b) * 100 is 2.0000000000000018
    assert result["wordsim_spearman_float_vs_package"] >= 0.98


@pytest.mark.slow
def test_minilm_pot8_is_on_par_with_int8(tmp_path):
    """#13's H-ViT bound on real text: pot8's embedding cosine within 0.002 of int8's (measured 0.9965
    and 0.9974, bench/results/2026-12-06-schemes-minilm-phrases.md; 0.9951 with power-of-two steps
    and factors on every input; 0.9946 and 0.9919 before int8 balanced) and its probe drop within
    int8's bound of 2 sentences."""
    from tvmcomp.evaluate import evaluate_package

    results = {}
    for scheme in ("int8", "pot8"):
        assert main(["build", "--model", "minilm", "--target", "x86", "--quant", scheme, "-o", str(tmp_path / scheme)]) == 0
        results[scheme] = evaluate_package(tmp_path / scheme)
    assert results["pot8"]["embedding_cosine_mean"] >= results["int8"]["embedding_cosine_mean"] - 0.002
    assert round(results["pot8"]["probe_accuracy_drop_pt"], 6) <= 2.0


@pytest.mark.slow
def test_minilm_pot8_integer_only_stays_where_it_was_measured(tmp_path):
    """--integer-only on real text: I-BERT's integer softmax, GELU and LayerNorm, every Linear input
    an integer code with power-of-two factors, stay where they were measured (embedding cosine 0.9939
    with phrases in the calibration text, bench/results/2026-12-06-integer-only-minilm-phrases.md, and
    at dff2c21 before them in a manual build) and keep int8's probe bound. It was 0.0013 under pot8 (0.9933 against 0.9946,
    2026-12-06-integer-only-minilm.md) until pot8's inputs quantized from float took int8's steps
    (0.9965 now): an integer-only layer has no such input, so that gap (0.0026) is not the integer
    approximations' cost and no longer bounded here."""
    from tvmcomp.evaluate import evaluate_package

    assert main(["build", "--model", "minilm", "--target", "x86", "--quant", "pot8", "--integer-only",
                 "-o", str(tmp_path / "integer-only")]) == 0
    result = evaluate_package(tmp_path / "integer-only")
    assert result["embedding_cosine_mean"] >= 0.993
    assert round(result["probe_accuracy_drop_pt"], 6) <= 2.0


@pytest.mark.slow
def test_minilm_w4a8_and_pwlq4_meet_their_size_and_accuracy_bounds(tmp_path):
    """#14's bounds on real text: w4a8 (4-bit weights and vocabulary rows) at most 0.2x the float
    weights and a probe drop of at most 2 pt (measured 14.3 MiB, 0.166x, cosine 0.9804, drop -1);
    pwlq4 more accurate than w4a8 at the same group size (measured 0.9942; both balanced, GPTQ on 128
    batches: bench/results/2026-12-07-gptq-samples-minilm*.md)."""
    from tvmcomp.evaluate import evaluate_package

    results = {}
    for scheme in ("w4a8", "pwlq4"):
        assert main(["build", "--model", "minilm", "--target", "x86", "--quant", scheme, "-o", str(tmp_path / scheme)]) == 0
        results[scheme] = evaluate_package(tmp_path / scheme)
    w4a8 = tvmcomp.load(tmp_path / "w4a8").metadata
    assert w4a8["library_bytes"] <= 0.2 * w4a8["float_weight_bytes"]
    assert round(results["w4a8"]["probe_accuracy_drop_pt"], 6) <= 2.0 and results["w4a8"]["embedding_cosine_mean"] > 0.975
    assert results["pwlq4"]["embedding_cosine_mean"] > results["w4a8"]["embedding_cosine_mean"] + 0.005


@pytest.mark.slow
def test_minilm_pruned_to_half_its_flops_then_int8_keeps_its_measured_accuracy(tmp_path):
    """#15 on real text: --prune-flops 0.5 --quant int8 keeps at most half the encoder's FLOPs, runs
    integer kernels, and stays where it was measured (cosine 0.7977 against the unpruned float model
    with 128 pruning texts and phrases in them, bench/results/2026-12-06-prune-minilm-phrases.md;
    0.7707 on 32 sentences). Kwon et al.'s <= 1 pt drop is not reached on MiniLM label-free
    (docs/pruning.md)."""
    from tvmcomp.evaluate import evaluate_package

    path = tmp_path / "p50"
    assert main(["build", "--model", "minilm", "--target", "x86", "--prune-flops", "0.5", "--quant", "int8",
                 "--dump-code", "relax", "-o", str(path)]) == 0
    metadata = tvmcomp.load(path).metadata
    assert 0.45 < metadata["pruning"]["flops_kept"] <= 0.5
    assert (path / "code" / "model.relax.py").read_text().count("call_tir(fused_packed_matmul") >= 24
    assert evaluate_package(path)["embedding_cosine_mean"] > 0.78


@pytest.mark.slow
def test_minilm_pruned_to_0_7_flops_keeps_its_word_similarities_in_int8(tmp_path, capsys):
    """#15: int8 on MiniLM pruned to 0.7 FLOPs keeps the pruned fp32 model's WordSim (0.9011 against
    0.9026, bench/results/2026-12-06-outliers-minilm.md): layer 0's FFN down-projection has a weight
    of 7.7 in a column of weights near 0.05, and with it in the int8 weight WordSim was 0.8023. The
    build says such weights left the int8 weights (tvmcomp.quant.outliers)."""
    from tvmcomp.evaluate import evaluate_package

    path = tmp_path / "p70"
    assert main(["build", "--model", "minilm", "--target", "x86", "--prune-flops", "0.7", "--quant", "int8",
                 "-o", str(path)]) == 0
    assert "past 8x their column's rms, leave the int8 weights" in capsys.readouterr().err
    assert evaluate_package(path)["wordsim_spearman_float_vs_package"] > 0.88


@pytest.mark.slow
def test_minilm_token_pruned_to_half_its_flops_then_int8_keeps_its_measured_accuracy(tmp_path):
    """#15's stretch on real text at s32: --prune-tokens 0.5 --quant int8 keeps at most half the
    encoder's FLOPs, ranks tokens in the graph, and stays where bench/prune.py --tokens measured it
    (cosine 0.8309, probe drop 1 pt against the unpruned float model)."""
    from tvmcomp.evaluate import evaluate_package

    path = tmp_path / "t50"
    assert main(["build", "--model", "minilm", "--target", "x86", "--seq-len", "32", "--prune-tokens", "0.5",
                 "--quant", "int8", "--dump-code", "relax", "-o", str(path)]) == 0
    tokens = tvmcomp.load(path).metadata["pruning"]["tokens"]
    assert 0.4 < tokens["flops_kept"] <= 0.5 and tokens["tokens"][0] == 32 and tokens["tokens"][-1] < 16
    drops = len(set(tokens["tokens"])) - 1  # one ranking wherever the count goes down
    assert (path / "code" / "model.relax.py").read_text().count("R.topk(") == drops >= 1
    result = evaluate_package(path)
    assert result["embedding_cosine_mean"] > 0.81 and round(result["probe_accuracy_drop_pt"], 6) <= 3.0
