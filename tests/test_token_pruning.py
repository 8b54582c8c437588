"""Token pruning (#15's stretch) on the two-layer toy encoders of test_prune: what is kept, what the
output holds, the FLOPs, the budget, and the command line."""

import json

import numpy as np
import pytest
import torch

from test_prune import SEQ, ToyEncoder, ToyMPNet, _batches, _outputs
from tvmcomp.errors import TvmcompError
from tvmcomp.prune.structure import encoder_structure
from tvmcomp.prune.tokens import choose_tokens, drop_tokens, encoder_macs

TOYS = [ToyEncoder, ToyMPNet]


def _dropping(toy, fractions):
    module = toy()
    drop_tokens(module, encoder_structure(module), fractions)
    return module


def _short_batches():
    """Inputs of 4 to 8 real tokens of 16, the rest padding."""
    batches = _batches(4)
    for batch, length in zip(batches, (4, 6, 7, 8)):
        batch["attention_mask"][0, length:] = 0
    return batches


@pytest.mark.parametrize("toy", TOYS)
def test_keeping_every_token_computes_what_the_model_does(toy):
    batches = _batches()
    for want, got in zip(_outputs(toy(), batches), _outputs(_dropping(toy, [1.0]), batches)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("toy", TOYS)
def test_padding_goes_first_so_inputs_that_fit_lose_nothing(toy):
    """Half of 16 kept after the first layer: inputs of at most 8 real tokens keep all of them, the
    second layer's attention (and MPNet's position bias) cut to them; a dropped row holds the mean
    of the real rows."""
    module = _dropping(toy, [0.5])
    for batch, want in zip(_short_batches(), _outputs(toy(), _short_batches())):
        got = _outputs(module, [batch])[0]
        real = batch["attention_mask"][0] != 0
        dropped = sorted(set(range(SEQ)) - set(module.encoder.encoder.layer[1].state.positions[0].tolist()))
        assert len(dropped) == SEQ // 2 and not real[dropped].any()
        np.testing.assert_allclose(got[0, real], want[0, real], atol=1e-5)
        np.testing.assert_allclose(got[0, dropped], np.broadcast_to(want[0, real].mean(0), (len(dropped), 32)),
                                   atol=1e-5)


def test_kept_tokens_are_the_first_and_those_most_attended_to():
    """Every token real: the first layer's attention weights, read from the unpruned model, summed
    over heads and queries, rank the tokens; the first is kept whatever its rank."""
    batch = {"input_ids": torch.arange(1, SEQ + 1)[None], "attention_mask": torch.ones(1, SEQ, dtype=torch.int64)}
    reference = ToyEncoder()
    reference.encoder.config._attn_implementation = "eager"
    with torch.no_grad():
        weights = reference.encoder(**batch, output_attentions=True).attentions[0][0]  # [heads, queries, keys]
    received = weights.sum(dim=(0, 1)).numpy()
    want = {0} | set((np.argsort(-received[1:])[:SEQ // 2 - 1] + 1).tolist())

    module = _dropping(ToyEncoder, [0.5])
    with torch.no_grad():
        out = module(**batch)
    kept = module.encoder.encoder.layer[1].state.positions[0].tolist()
    assert set(kept) == want and len(kept) == SEQ // 2
    dropped = sorted(set(range(SEQ)) - want)
    np.testing.assert_allclose(out[0, dropped], out[0, kept].mean(0).expand(len(dropped), -1), atol=1e-6)


def test_tokens_are_pruned_after_heads_and_neurons():
    """MPNet's head-bias hook (slicing) passes ``output_attentions`` by position: asking for the
    attention weights after it must not pass it twice. With every token kept, the head-pruned
    model computes what it did."""
    from tvmcomp.prune import prune_encoder

    module, batches = ToyMPNet(), _batches()
    assert 0 not in prune_encoder(module, batches, 0.8, SEQ).heads
    want = _outputs(module, batches)
    drop_tokens(module, encoder_structure(module), [1.0])
    for expected, got in zip(want, _outputs(module, batches)):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_encoder_flops_with_fewer_tokens_match_a_hand_count():
    """Per layer, n tokens: n * (4 heads * (4 projections * 32 * 8 + 2 * n keys * 8) + 64 neurons * 2 * 32)."""
    structure = encoder_structure(ToyEncoder())
    assert encoder_macs(structure, [16, 8]) == 16 * (4 * (1024 + 256) + 4096) + 8 * (4 * (1024 + 128) + 4096)


def test_token_counts_meet_the_budget_and_the_model_drops_them():
    module, batches = ToyEncoder(), _batches()
    report = choose_tokens(module, encoder_structure(module), batches, 0.7, SEQ)
    assert report.flops_kept <= 0.7 and report.tokens[0] == SEQ and report.tokens[1] < SEQ
    assert report.fractions == [report.tokens[1] / SEQ]
    assert module.encoder.encoder.layer[0].fractions == report.fractions  # what the exported graph will keep
    with pytest.raises(TvmcompError, match=r"--prune-tokens 0.01 is below what dropping tokens can reach at 16 "
                                           r"tokens: keeping one token after the first layer keeps 0.5"):
        fresh = ToyEncoder()
        choose_tokens(fresh, encoder_structure(fresh), batches, 0.01, SEQ)


@pytest.mark.parametrize("toy", TOYS)
def test_the_search_reads_layers_it_ran_for_the_same_fractions_and_computes_what_a_fresh_run_does(toy):
    """While choose_tokens searches, a layer whose output's fractions were recorded is read, not run:
    a candidate cutting from layer 2 on runs layer 0 no more (its kept tokens unchanged), and the outputs
    are those of a model that never recorded anything."""
    batches = _batches()
    inputs = {name: torch.from_numpy(np.concatenate([b[name] for b in batches])) for name in batches[0]}
    module, fractions = toy(layers=4), [0.75, 0.75, 0.75]
    structure = encoder_structure(module)
    runs = [0] * 4
    for index, layer in enumerate(structure.layers):
        layer.module.register_forward_hook(lambda *_, index=index: runs.__setitem__(index, runs[index] + 1))
    state = drop_tokens(module, structure, fractions)
    state.layer_outputs, state.recording = {}, True
    with torch.no_grad():
        module(**inputs)
    state.recording = False
    fractions[:] = [0.75, 0.5, 0.5]  # layer 0's output (12 tokens kept) depends on fractions[0] only: recorded
    with torch.no_grad():
        got = module(**inputs)
    assert runs == [1, 2, 2, 2]
    with torch.no_grad():
        want = _dropping(lambda: toy(layers=4), [0.75, 0.5, 0.5])(**inputs)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_reading_the_layers_before_the_cut_chooses_what_running_them_again_does():
    """Every step tries cuts from layers 1, 2 and 3 of 4; the later ones read layers 0 and 1."""
    batches = _batches()
    reports = []
    for reuse in (False, True):
        module = ToyEncoder(layers=4)
        reports.append(choose_tokens(module, encoder_structure(module), batches, 0.5, SEQ, reuse_layers=reuse))
        assert module.encoder.encoder.layer[0].state.layer_outputs is None  # nothing of these inputs is exported
    assert reports[0] == reports[1]


def test_a_token_pruned_folder_builds_exports_and_runs_as_pytorch_does(tmp_path, capsys, empty_schedules):
    """The command a user runs, after head pruning and before int8: the graph ranks tokens with a
    top-k; the fp32 package computes what the token-dropping PyTorch module does."""
    import tvmcomp
    from test_cli import run_cli
    from test_hf_folder import _save_tiny_encoder
    from tvmcomp.models import find_model

    folder = _save_tiny_encoder(tmp_path / "model", "bert")
    common = ["--model", str(folder), "--seq-len", "16", "--calibration-samples", "4"]
    code, _, err = run_cli(capsys, "build", *common, "--prune-tokens", "0.6", "-o", str(tmp_path / "fp32"))
    assert code == 0, err
    assert "[prune] tokens entering each layer at 16: [16, " in err
    pruning = json.loads((tmp_path / "fp32" / "metadata.json").read_text())["pruning"]
    assert pruning["tokens"]["flops_kept"] <= 0.6 and "heads" not in pruning

    module = find_model(str(folder)).load_torch()
    drop_tokens(module, encoder_structure(module), pruning["tokens"]["fractions"])
    package = tvmcomp.load(tmp_path / "fp32")
    inputs = package.example_inputs()
    with torch.no_grad():
        want = module(**{name: torch.from_numpy(value) for name, value in inputs.items()}).numpy()
    np.testing.assert_allclose(package.run(**inputs)[0], want, atol=1e-4)

    code, _, err = run_cli(capsys, "build", *common, "--prune-flops", "0.8", "--prune-tokens", "0.8", "--quant", "int8",
                           "--dump-code", "relax", "-o", str(tmp_path / "int8"))
    assert code == 0, err
    pruning = json.loads((tmp_path / "int8" / "metadata.json").read_text())["pruning"]
    assert pruning["flops_kept"] <= 0.8 and pruning["tokens"]["flops_kept"] <= 0.8
    graph = (tmp_path / "int8" / "code" / "model.relax.py").read_text()
    assert "topk" in graph and "call_tir(fused_packed_matmul" in graph  # ranked, and integer Linears

    code, _, err = run_cli(capsys, "build", *common, "--prune-flops", "0.05", "--prune-tokens", "0.5",
                           "-o", str(tmp_path / "none"))
    assert code == 2 and "--prune-flops 0.05 left a layer with no head (heads [" in err

