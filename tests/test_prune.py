"""Structured pruning (#15) on a two-layer toy BERT: slicing equals masking, FLOPs by hand, the
Fisher ranking, mask tuning, and the command line."""

import json

import numpy as np
import pytest
import torch

from tvmcomp.errors import TvmcompError
from tvmcomp.prune import prune_encoder
from tvmcomp.prune.importance import mask_gradients
from tvmcomp.prune.masks import masked
from tvmcomp.prune.rearrange import rearranged
from tvmcomp.prune.search import Selection, select_under_budget
from tvmcomp.prune.slicing import slice_encoder
from tvmcomp.prune.structure import encoder_structure

SEQ = 16


class ToyEncoder(torch.nn.Module):
    """BERT with 2 layers (``layers``) of 4 heads of 8 and 64 FFN neurons, returning last_hidden_state."""

    def __init__(self, seed=0, layers=2):
        super().__init__()
        from transformers import BertConfig, BertModel

        torch.manual_seed(seed)
        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=SEQ)
        self.encoder = BertModel(config, add_pooling_layer=False).eval()

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _batches(count=8, seed=1):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        mask = np.zeros((1, SEQ), np.int64)
        mask[0, :rng.integers(6, SEQ + 1)] = 1
        batches.append({"input_ids": rng.integers(1, 100, (1, SEQ)).astype(np.int64), "attention_mask": mask})
    return batches


def _outputs(module, batches):
    with torch.no_grad():
        return [module(**{k: torch.from_numpy(v) for k, v in b.items()}).numpy() for b in batches]


def test_sliced_encoder_computes_what_the_masked_one_does():
    module, batches = ToyEncoder(), _batches()
    structure = encoder_structure(module)
    selection = Selection([np.array([0, 2, 3]), np.array([1])], [np.arange(0, 64, 3), np.array([5, 6, 60])])
    rng = np.random.default_rng(2)
    head_scales = [rng.uniform(0.5, 1.5, len(h)) for h in selection.heads]
    neuron_scales = [rng.uniform(0.5, 1.5, len(n)) for n in selection.neurons]
    head_masks, neuron_masks = [torch.zeros(4), torch.zeros(4)], [torch.zeros(64), torch.zeros(64)]
    for masks, kept, scales in ((head_masks, selection.heads, head_scales),
                                (neuron_masks, selection.neurons, neuron_scales)):
        for mask, index, scale in zip(masks, kept, scales):
            mask[torch.as_tensor(index)] = torch.as_tensor(scale, dtype=torch.float32)
    with masked(structure, head_masks, neuron_masks):
        want = _outputs(module, batches)

    slice_encoder(structure, selection, head_scales, neuron_scales)
    layer = module.encoder.encoder.layer
    assert tuple(layer[0].attention.self.query.weight.shape) == (24, 32)  # 3 heads of 8
    assert tuple(layer[1].attention.output.dense.weight.shape) == (32, 8)  # 1 head
    assert tuple(layer[1].intermediate.dense.weight.shape) == (3, 32)
    assert tuple(layer[0].output.dense.weight.shape) == (32, 22)
    for got, expected in zip(_outputs(module, batches), want):
        np.testing.assert_allclose(got, expected, atol=1e-5)


class ToyMPNet(torch.nn.Module):
    """MPNet (relative position bias per head, shared by the layers) with ToyEncoder's sizes."""

    def __init__(self, seed=0, layers=2):
        super().__init__()
        from transformers import MPNetConfig, MPNetModel

        torch.manual_seed(seed)
        config = MPNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=SEQ + 2)
        self.encoder = MPNetModel(config, add_pooling_layer=False).eval()
        with torch.no_grad():  # a position bias that differs by head, as a trained one does
            self.encoder.encoder.relative_attention_bias.weight.normal_(0, 1)

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_a_sliced_mpnet_keeps_each_layers_heads_of_the_shared_position_bias_and_exports():
    from conftest import run_imported
    from tvmcomp.frontend import import_torch

    module, batches = ToyMPNet(), _batches()
    structure = encoder_structure(module)
    selection = Selection([np.array([1, 3]), np.array([0, 2, 3])], [np.arange(0, 64, 2), np.arange(0, 64, 4)])
    head_masks = [torch.zeros(4).index_fill_(0, torch.as_tensor(h), 1.0) for h in selection.heads]
    neuron_masks = [torch.zeros(64).index_fill_(0, torch.as_tensor(n), 1.0) for n in selection.neurons]
    with masked(structure, head_masks, neuron_masks):
        want = _outputs(module, batches)
    slice_encoder(structure, selection)
    attention = module.encoder.encoder.layer[0].attention.attn
    assert tuple(attention.q.weight.shape) == (16, 32) and attention.all_head_size == 16
    for got, expected in zip(_outputs(module, batches), want):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    imported = import_torch(module, batches[0])
    (got,) = run_imported(imported, batches[0])
    np.testing.assert_allclose(got, want[0], atol=1e-4)


def test_flops_of_a_pruned_encoder_match_a_hand_count():
    structure = encoder_structure(ToyEncoder())
    # per token: a head 4 projections x 32 x 8 + scores and context 2 x 16 x 8; a neuron 2 x 32
    assert structure.head_macs(SEQ) == 4 * 32 * 8 + 2 * 16 * 8 == 1280
    assert structure.neuron_macs() == 64
    assert structure.macs(SEQ) == 2 * (4 * 1280 + 64 * 64)
    assert structure.macs(SEQ, heads=[2, 3], neurons=[10, 64]) == 5 * 1280 + 74 * 64


def test_mask_search_prunes_a_head_made_useless_first():
    module, batches = ToyEncoder(), _batches()
    structure = encoder_structure(module)
    with torch.no_grad():
        structure.layers[0].attention_out.weight[:, 16:24] = 0.0  # head 2 of layer 0 writes nothing
    head_grads, neuron_grads = mask_gradients(module, structure, batches)
    heads, neurons = [np.square(g).sum(axis=0) for g in head_grads], [np.square(g).sum(axis=0) for g in neuron_grads]
    assert heads[0][2] == 0.0 and min(h.min() for h in heads[1:]) > 0 and heads[0][[0, 1, 3]].min() > 0
    # a budget one head short of everything: that head goes (a neuron costs 64, a head 1280)
    total = structure.macs(SEQ)
    selection = select_under_budget(structure, heads, neurons, (total - 1280) / total, SEQ)
    assert [list(h) for h in selection.heads] == [[0, 1, 3], [0, 1, 2, 3]]
    assert [len(n) for n in selection.neurons] == [64, 64]


def test_token_weights_count_the_class_token_as_all_the_others_when_the_task_reads_it():
    from tvmcomp.prune.masks import token_weights

    texts = {"attention_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0]])}
    np.testing.assert_array_equal(token_weights(texts, (2, 4), "mean"), [1, 1, 1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(token_weights(texts, (2, 4), "first"), [2, 1, 1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(token_weights({}, (1, 5), "first"), [4, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="readout 'max'"):
        token_weights({}, (1, 5), "max")


def test_label_free_probes_scale_each_token_by_the_root_of_its_weight():
    from tvmcomp.prune.importance import _probe_losses

    output = torch.zeros(1, 5, 3, requires_grad=True)
    gradients = {}
    for readout in ("mean", "first"):  # the same seed draws the same probes
        (loss,) = _probe_losses(seed=3, probes=1, readout=readout)(0, {}, output)
        gradients[readout] = torch.autograd.grad(loss, output)[0][0].numpy()
    # the first token weighs 4 (the 4 others): its probe is twice as long, the others' unchanged
    np.testing.assert_allclose(gradients["first"][0], 2 * gradients["mean"][0], rtol=1e-6)
    np.testing.assert_array_equal(gradients["first"][1:], gradients["mean"][1:])


@pytest.mark.parametrize("readout", ["mean", "first"])
def test_task_loss_gradients_are_the_derivatives_of_a_fitted_linear_heads_cross_entropy(readout):
    """With labels, each sample's row is d/dmask of -log p(label) under a logistic regression fitted
    on the float model's outputs as the task reads them (mean-pooled, or the first token alone);
    checked by central differences of that loss, written here (in float64: the toy's gradients are
    too small for float32 differences)."""
    from sklearn.linear_model import LogisticRegression

    module, batches = ToyEncoder().double(), _batches(12)
    structure = encoder_structure(module)
    with torch.no_grad():
        structure.layers[1].attention_out.weight[:, 0:8] = 0.0  # head 0 of layer 1 writes nothing
    labels = np.array([0, 1] * 6)

    def pooled(outputs):
        if readout == "first":
            return np.stack([o[0, 0] for o in outputs])
        return np.stack([(o[0] * b["attention_mask"][0, :, None]).sum(0) / b["attention_mask"].sum()
                         for o, b in zip(outputs, batches)])

    head = LogisticRegression(max_iter=2000).fit(pooled(_outputs(module, batches)), labels)

    def losses(head_masks, neuron_masks):  # binary cross-entropy of the logit z = w . e + b, per text
        with masked(structure, head_masks, neuron_masks):
            z = pooled(_outputs(module, batches)) @ head.coef_[0] + head.intercept_[0]
        return np.logaddexp(0, np.where(labels == 1, -z, z))

    head_grads, neuron_grads = mask_gradients(module, structure, batches, labels, readout=readout)
    assert head_grads[0].shape == (12, 4) and neuron_grads[1].shape == (12, 64)  # one row per sample
    assert np.abs(head_grads[1][:, 0]).max() == 0.0
    eps = 1e-2
    for kind, layer, unit, grads in (("head", 0, 2, head_grads), ("head", 1, 3, head_grads),
                                     ("neuron", 0, 7, neuron_grads), ("neuron", 1, 40, neuron_grads)):
        shifted = []
        for sign in (1, -1):
            masks = {"head": [torch.ones(4), torch.ones(4)], "neuron": [torch.ones(64), torch.ones(64)]}
            masks[kind][layer][unit] += sign * eps
            shifted.append(losses(masks["head"], masks["neuron"]))
        numeric = (shifted[0] - shifted[1]) / (2 * eps)
        np.testing.assert_allclose(grads[layer][:, unit], numeric, rtol=1e-3, atol=1e-4 * np.abs(numeric).max())


def _pruned_loss(gradients, kept):
    """sum over samples of (the pruned units' summed gradient)^2: the Fisher estimate of the loss."""
    pruned = np.setdiff1d(np.arange(gradients.shape[1]), kept)
    return float(np.square(gradients[:, pruned].sum(axis=1)).sum())


def test_rearrangement_prunes_a_unit_whose_gradient_cancels_instead_of_one_that_adds_up():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(64)
    noise = lambda: 0.05 * rng.standard_normal(64)  # noqa: E731
    # 0 and 1 are the quietest and point the same way: pruned together their gradients add up;
    # 2 is a little louder but points the other way; 3 and 4 are loud
    gradients = np.column_stack([v + noise(), v + noise(), -1.2 * v + noise(), *(3 * rng.standard_normal((2, 64)))])
    by_diagonal = np.array([2, 3, 4])  # prune 2 of 5: the diagonal Fisher drops 0 and 1
    kept = rearranged(by_diagonal, gradients)
    assert len(kept) == 3 and 2 not in kept and {3, 4} <= set(kept)
    assert _pruned_loss(gradients, kept) < 0.1 * _pruned_loss(gradients, by_diagonal)


def test_rearrangement_keeps_the_count_and_never_raises_the_estimated_loss_of_the_diagonal_choice():
    rng = np.random.default_rng(1)
    gradients = rng.standard_normal((40, 8)) @ rng.standard_normal((8, 24))  # correlated units
    for count in (1, 6, 12, 23, 24):
        diagonal = np.sort(np.argsort(-np.square(gradients).sum(axis=0))[:count])
        kept = rearranged(diagonal, gradients)
        assert len(kept) == count and len(set(kept)) == count
        assert _pruned_loss(gradients, kept) <= _pruned_loss(gradients, diagonal) + 1e-9


def test_mask_tuning_brings_the_pruned_encoder_closer_to_the_float_one():
    batches, held_out = _batches(), _batches(seed=5)
    float_outputs = _outputs(ToyEncoder(), held_out)

    def error(tune, refit=False):
        module = ToyEncoder()
        prune_encoder(module, batches, 0.5, SEQ, tune=tune, refit=refit)
        return sum(np.sum((got - want) ** 2) for got, want in zip(_outputs(module, held_out), float_outputs))

    assert error(tune=True) < 0.97 * error(tune=False)  # 0.95 on this random toy; MiniLM: bench/prune.py
    # the refit of the kept columns, on inputs it was not fitted on (0.27 on this toy)
    assert error(tune=True, refit=True) < 0.5 * error(tune=True)


def _refit_ridge(inputs, target, samples):
    """The ridge the refit chooses for a Linear of 8 inputs whose weights start at ``W_s = 1``, and the
    weight it writes."""
    from tvmcomp.prune.tuning import REFIT_RIDGES, _refit

    linear = torch.nn.Linear(8, 3)
    with torch.no_grad():
        linear.weight.fill_(1.0)
    ridge = _refit(linear, inputs, target, np.arange(8), np.ones(8), samples, np.ones(3), REFIT_RIDGES)
    return ridge, linear.weight.detach().double().numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_refit_chooses_its_ridge_on_held_out_samples(seed):
    from tvmcomp.prune.tuning import REFIT_RIDGES

    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(3, 8))  # far from the weights the ridge pulls towards (all 1)
    # 60 samples of 10 tokens that the truth explains: only the weakest ridge reaches it
    inputs = rng.normal(size=(600, 8))
    ridge, weight = _refit_ridge(inputs, inputs @ truth.T, np.repeat(np.arange(60), 10))
    assert ridge == min(REFIT_RIDGES)
    assert np.abs(weight - truth).max() < 0.05
    # 4 samples of 3 tokens of noise around W_s = 1: fitting them only moves away from it
    inputs = rng.normal(size=(12, 8))
    target = inputs @ np.ones((8, 3)) + 10 * rng.normal(size=(12, 3))
    assert _refit_ridge(inputs, target, np.repeat(np.arange(4), 3))[0] == max(REFIT_RIDGES)
    # fewer samples than it holds one out of in 4: nothing to choose on, the strongest pull
    assert _refit_ridge(inputs[:9], target[:9], np.repeat(np.arange(3), 3))[0] == max(REFIT_RIDGES)


def test_the_budget_is_respected_and_reported():
    module = ToyEncoder()
    report = prune_encoder(module, _batches(), 0.5, SEQ)
    assert report.flops_kept <= 0.5 and report.flops_kept > 0.4
    assert len(report.heads) == 2 and all(0 <= h <= 4 for h in report.heads)
    assert all(n % 16 == 0 for n in report.neurons)  # whole blocks of the int8 dot kernels
    structure = encoder_structure(module)
    assert structure.macs(SEQ) == sum(report.heads) * 1280 + sum(report.neurons) * 64
    assert report.params_kept < 1


@pytest.mark.parametrize("toy", [ToyEncoder, ToyMPNet])
def test_blocks_with_nothing_kept_are_removed_and_compute_what_their_masks_do(toy):
    from conftest import run_imported
    from tvmcomp.frontend import import_torch

    module, batches = toy(), _batches()
    structure = encoder_structure(module)
    # layer 0 keeps no head, layer 1 no neuron
    selection = Selection([np.array([], np.int64), np.array([1, 2])], [np.arange(16), np.array([], np.int64)])
    head_masks = [torch.zeros(4).index_fill_(0, torch.as_tensor(h), 1.0) for h in selection.heads]
    neuron_masks = [torch.zeros(64).index_fill_(0, torch.as_tensor(n), 1.0) for n in selection.neurons]
    with masked(structure, head_masks, neuron_masks):
        want = _outputs(module, batches)
    slice_encoder(structure, selection)
    assert structure.macs(SEQ) == 2 * 1280 + 16 * 64
    names = {name for name, _ in module.named_parameters()}
    assert not any(".0.attention." in n and any(p in n for p in (".query.", ".key.", ".value.", ".q.", ".k.", ".v."))
                   for n in names)
    for got, expected in zip(_outputs(module, batches), want):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    imported = import_torch(module, batches[0])
    text = imported.mod["main"].script()
    # layer 1: QK^T, PV and 4 projections; layer 0: the FFN up and down projections
    assert text.count("R.nn.softmax") == 1 and text.count("R.matmul") == 2 + 4 + 2
    assert text.count("gelu") == 1  # layer 1's up projection is an identity whose GELU nothing reads: dropped
    (got,) = run_imported(imported, batches[0])
    np.testing.assert_allclose(got, want[0], atol=1e-4)


def test_a_tiny_budget_removes_whole_blocks():
    report = prune_encoder(ToyEncoder(), _batches(), 0.05, SEQ)
    assert report.flops_kept <= 0.05 and (0 in report.heads or 0 in report.neurons)


def test_a_model_without_bert_layers_is_refused():
    with pytest.raises(TvmcompError, match=r"pruning needs a BERT-class or ViT PyTorch encoder .*MPNet: attention.attn.q"):
        encoder_structure(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_prune_then_int8_builds_integer_kernels_from_a_folder(tmp_path, capsys, empty_schedules):
    """The command a user runs: a pruned fp32 and a pruned int8 package of the same folder, the
    pruning deterministic; int8 costs what int8 costs on top of it."""
    import tvmcomp
    from test_cli import run_cli
    from test_hf_folder import _save_tiny_encoder

    folder = _save_tiny_encoder(tmp_path / "model", "bert")
    common = ["--model", str(folder), "--seq-len", "16", "--prune-flops", "0.6", "--calibration-samples", "4"]
    for name, extra in (("fp32", []), ("int8", ["--quant", "int8", "--dump-code", "relax"])):
        code, _, err = run_cli(capsys, "build", *common, *extra, "-o", str(tmp_path / name))
        assert code == 0, err
        assert "[prune] kept" in err
    metadata = json.loads((tmp_path / "int8" / "metadata.json").read_text())
    assert 0.4 < metadata["pruning"]["flops_kept"] <= 0.6 and metadata["pruning"]["heads"] != [2, 2]
    graph = (tmp_path / "int8" / "code" / "model.relax.py").read_text()
    assert graph.count("call_tir(fused_packed_matmul") >= 8 and "quantize" in graph  # integer Linears
    inputs = tvmcomp.load(tmp_path / "fp32").example_inputs()
    pruned, quantized = (tvmcomp.load(tmp_path / name).run(**inputs)[0].ravel() for name in ("fp32", "int8"))
    assert pruned @ quantized / np.linalg.norm(pruned) / np.linalg.norm(quantized) > 0.99


def test_pruning_bad_input_is_one_line(tmp_path, capsys):
    from test_cli import assert_user_error, relu_onnx
    from test_hf_folder import _save_tiny_encoder

    out = ["-o", str(tmp_path / "p")]
    relu_onnx(tmp_path / "r.onnx")
    for flag in ("--prune-flops", "--prune-tokens"):  # heads and neurons; tokens (test_token_pruning)
        assert_user_error(capsys, ["build", flag, "1.5", *out], f"{flag} is the fraction of the encoder's FLOPs to "
                          "keep, in (0, 1]; not 1.5")
        assert_user_error(capsys, ["build", "--model", str(tmp_path / "r.onnx"), flag, "0.5", *out],
                          f"{flag} needs the model's PyTorch source, to rank heads and neurons by gradients")
    assert_user_error(capsys, ["build", "--model", "vit-s", "--prune-tokens", "0.5", *out],
                      "--prune-tokens ranks tokens by a text encoder's attention over its real tokens; vit-s takes "
                      "images (--prune-flops prunes its heads and neurons)")
    assert_user_error(capsys, ["build", "--prune-tokens", "0.5", "--quant", "int8", "--integer-only", *out],
                      "--integer-only and --prune-tokens do not go together")
    folder = _save_tiny_encoder(tmp_path / "distil", "distilbert")
    assert_user_error(capsys, ["build", "--model", str(folder), "--prune-flops", "0.5", *out],
                      "pruning needs a BERT-class or ViT PyTorch encoder")
    sorted_labels = tmp_path / "sorted.tsv"
    sorted_labels.write_text("pos\tgood\n" * 256 + "neg\tbad\n")
    assert_user_error(capsys, ["build", "--prune-flops", "0.5", "--calib-data", str(sorted_labels), *out],
                      "pruning reads its first 256 samples, and they hold one class (pos); mix the classes in the file")


@pytest.mark.parametrize("name, text, ranked_on", [
    ("mine.txt", "the first of my texts\nanother one\n\na third, longer text of mine\n", "on 3 inputs of {}, label-free"),
    ("reviews.tsv", "good\ta fine film\nbad\ta dull film\ngood\tgreat acting\nbad\tno plot at all\n",
     "on 4 labelled samples of {}, by the task loss of a linear head on 2 classes"),
])
def test_pruning_ranks_on_the_users_texts_given_with_calib_data(tmp_path, capsys, name, text, ranked_on):
    from test_cli import run_cli
    from test_hf_folder import _save_tiny_encoder

    folder = _save_tiny_encoder(tmp_path / "model", "bert")
    texts = tmp_path / name
    texts.write_text(text)
    code, _, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", "16", "--prune-flops", "0.6",
                           "--calib-data", str(texts), "-o", str(tmp_path / "p"))
    assert code == 0, err
    assert ranked_on.format(texts) in err and "[prune] kept" in err


def test_a_vit_prunes_by_the_task_loss_of_class_subfolders_and_eval_scores_that_task(tmp_path, capsys):
    """--calib-data calib/ with calib/dark/*.png and calib/light/*.png: labelled images, as a .tsv labels texts."""
    from PIL import Image
    from test_cli import run_cli

    from models_for_tests import save_tiny_vit

    model = save_tiny_vit(tmp_path / "vit")
    rng = np.random.default_rng(0)
    for name, low in (("dark", 0), ("light", 128)):
        (tmp_path / "calib" / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(low, low + 128, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "calib" / name / f"{i}.png")
    code, _, err = run_cli(capsys, "build", "--model", str(model), "--prune-flops", "0.6", "--calib-data",
                           str(tmp_path / "calib"), "-o", str(tmp_path / "p"))
    assert code == 0, err
    assert f"on 16 labelled samples of {tmp_path / 'calib'}, by the task loss of a linear head on 2 classes" in err
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "p"), "--data", str(tmp_path / "calib"))
    assert code == 0, err
    result = json.loads((tmp_path / "p" / "eval.json").read_text())
    assert result["task_probe_samples"] == 16 and result["task_probe_float"] == 1.0  # dark and light: separable
    assert "your task (16 labelled samples; a linear probe fitted on the float embeddings of every other one of " \
        "each class" in out


class ToyDinov2(torch.nn.Module):
    """A pre-LN ViT (DINOv2: layer scales after both blocks, a final LayerNorm) with ToyEncoder's widths,
    on 28 px images in patches of 7: 17 tokens."""

    def __init__(self, seed=0, layers=2):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        torch.manual_seed(seed)
        config = Dinov2Config(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, mlp_ratio=2,
                              image_size=28, patch_size=7, layerscale_value=1.0)
        self.encoder = Dinov2Model(config).eval()
        with torch.no_grad():  # layer scales that differ by channel, as trained ones do
            for name, parameter in self.encoder.named_parameters():
                if name.endswith("lambda1"):
                    parameter.uniform_(0.2, 2.0)
        self.blocks, self.pre_attention_norm, self.pre_ffn_norm = self.encoder.encoder.layer, "norm1", "norm2"

    def forward(self, input_image):
        return self.encoder(pixel_values=input_image).last_hidden_state


class ToyViT(ToyDinov2):
    """The original ViT's layers (no layer scale) at the same sizes."""

    def __init__(self, seed=0, layers=2):  # not ToyDinov2.__init__, which builds a DINOv2
        torch.nn.Module.__init__(self)
        from transformers import ViTConfig, ViTModel

        torch.manual_seed(seed)
        config = ViTConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
                           image_size=28, patch_size=7)
        self.encoder = ViTModel(config, add_pooling_layer=False).eval()
        self.blocks, self.pre_attention_norm, self.pre_ffn_norm = self.encoder.layers, "layernorm_before", "layernorm_after"


def _images(count=8, seed=1):
    rng = np.random.default_rng(seed)
    return [{"input_image": rng.standard_normal((1, 3, 28, 28)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("toy", [ToyDinov2, ToyViT])
def test_a_pre_ln_vit_reads_the_next_layers_norm(toy):
    module = toy()
    structure = encoder_structure(module)
    layers = module.blocks
    # the attention block + residual is read by the layer's FFN LayerNorm, the layer's output by the next
    # layer's attention LayerNorm, the last layer's by the model's final one
    assert structure.layers[0].attention_norm is getattr(layers[0], module.pre_ffn_norm)
    assert structure.layers[0].ffn_norm is getattr(layers[1], module.pre_attention_norm)
    assert structure.layers[1].ffn_norm is module.encoder.layernorm
    assert structure.layers[0].head_dim == 8 and structure.layers[0].heads == 4 and structure.layers[0].neurons == 64


def test_dinov2s_layer_scales_fold_into_its_output_projections():
    from tvmcomp.prune.structure import fold_layer_scales

    module, batches = ToyDinov2(), _images()
    want = _outputs(module, batches)
    layer = module.blocks[1]
    scale, down = layer.layer_scale2.lambda1.detach().clone(), layer.mlp.fc2.weight.detach().clone()
    fold_layer_scales(encoder_structure(module))
    assert torch.equal(layer.layer_scale2.lambda1, torch.ones(32))
    torch.testing.assert_close(layer.mlp.fc2.weight, down * scale[:, None])
    for got, expected in zip(_outputs(module, batches), want):
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("toy", [ToyDinov2, ToyViT])
def test_a_sliced_pre_ln_vit_computes_what_the_masked_one_does_and_exports(toy):
    from conftest import run_imported
    from tvmcomp.frontend import import_torch
    from tvmcomp.prune.structure import fold_layer_scales

    module, batches = toy(), _images()
    structure = encoder_structure(module)
    fold_layer_scales(structure)
    # layer 0 keeps no head, layer 1 two heads and no neuron
    selection = Selection([np.array([], np.int64), np.array([1, 3])], [np.arange(0, 64, 4), np.array([], np.int64)])
    head_masks = [torch.zeros(4).index_fill_(0, torch.as_tensor(h), 1.0) for h in selection.heads]
    neuron_masks = [torch.zeros(64).index_fill_(0, torch.as_tensor(n), 1.0) for n in selection.neurons]
    with masked(structure, head_masks, neuron_masks):
        want = _outputs(module, batches)
    slice_encoder(structure, selection)
    assert tuple(module.blocks[1].attention.q_proj.weight.shape) == (16, 32)
    assert tuple(module.blocks[0].mlp.fc1.weight.shape) == (16, 32)
    for got, expected in zip(_outputs(module, batches), want):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    imported = import_torch(module, batches[0])
    assert imported.mod["main"].script().count("R.nn.softmax") == 1  # layer 0's attention is gone
    (got,) = run_imported(imported, batches[0])
    np.testing.assert_allclose(got, want[0], atol=1e-4)


def test_mask_tuning_brings_a_pruned_pre_ln_vit_closer_to_the_float_one():
    batches, held_out = _images(16), _images(8, seed=5)
    float_outputs = _outputs(ToyDinov2(), held_out)

    def error(tune, refit=False):
        module = ToyDinov2()
        report = prune_encoder(module, batches, 0.5, 17, tune=tune, refit=refit)
        assert report.flops_kept <= 0.5
        return sum(np.sum((got - want) ** 2) for got, want in zip(_outputs(module, held_out), float_outputs))

    untuned, tuned, refitted = error(tune=False), error(tune=True), error(tune=True, refit=True)
    assert tuned < 0.97 * untuned  # 0.93 on this random toy
    assert refitted < 0.95 * tuned  # 0.87


@pytest.mark.parametrize("toy", [ToyDinov2, ToyViT])
def test_pruning_for_a_class_token_readout_keeps_the_class_token_closer(toy):
    """On the calibration images (what the importance and the tuning see), weighting the class token
    as the task reads it lowers its squared error to the float model's."""
    batches = _images(16)
    float_outputs = _outputs(toy(), batches)

    def class_token_error(readout):
        module = toy()
        prune_encoder(module, batches, 0.5, 17, readout=readout)
        return sum(np.sum((got[:, 0] - want[:, 0]) ** 2) for got, want in zip(_outputs(module, batches), float_outputs))

    assert class_token_error("first") < 0.9 * class_token_error("mean")  # 0.78 (DINOv2) and 0.52 (ViT) here
