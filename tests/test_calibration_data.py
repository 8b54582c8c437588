"""--calib-data: a user's own model file quantized on the user's own data; each bad form is one line."""

import re

import numpy as np
import pytest
import torch

import tvmcomp
from models_for_tests import mlp_source, save_mlp_pt2
from test_cli import assert_user_error, run_cli
from tvmcomp.calibration_data import input_makers, read_calibration_data
from tvmcomp.errors import TvmcompError
from tvmcomp.frontend import TensorSpec


@pytest.fixture
def mlp_file(tmp_path):
    return save_mlp_pt2(tmp_path / "mlp.pt2")


def _samples(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 64)).astype(np.float32)


def test_a_model_file_quantizes_on_the_users_npz_to_integer_kernels(mlp_file, tmp_path, capsys, empty_schedules):
    np.savez(tmp_path / "calib.npz", x=_samples(64))  # 64 samples = 8 batches of the model's 8 rows
    code, out, err = run_cli(capsys, "build", "--model", str(mlp_file), "--quant", "int8", "--calib-data",
                             str(tmp_path / "calib.npz"), "--dump-code", "tir", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    assert "calibrating int8 on 8 batches of --calib-data" in err
    kernels = (tmp_path / "pkg" / "code" / "kernels.tir.py").read_text()
    assert re.search(r'param_0: T.Buffer\(\(.*?\), "int8"\)', kernels)  # the packed 8-bit weight
    assert re.search(r'packed_int8_matmul_intermediate = T.sblock_alloc_buffer\(\(.*?\), "int32"\)', kernels)
    x = _samples(8, seed=2)
    (got,) = tvmcomp.load(tmp_path / "pkg").run(x=x)
    with torch.no_grad():
        want = mlp_source().torch_module(torch.from_numpy(x)).numpy()
    cosine = float(np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 0.999 and np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_a_model_file_without_calibration_data_says_what_to_give(mlp_file, tmp_path, capsys):
    assert_user_error(capsys, ["build", "--model", str(mlp_file), "--quant", "int8", "-o", str(tmp_path / "pkg")],
                      "needs calibration data: give --calib-data FILE.npz (one array per model input, named as the "
                      "input, first axis = samples; inputs: x[8, 64])")


@pytest.mark.parametrize("name, write, message", [
    ("c.npz", lambda p: np.savez(p, y=_samples(16)), "the model's inputs are ['x']; missing ['x'], unexpected ['y']"),
    ("c.npz", lambda p: np.savez(p, x=_samples(16)[:, :32]), "'x' has shape [16, 32]; the model takes [8, 64], "
                                                             "so samples must be [N, 64]"),
    ("c.npz", lambda p: np.savez(p, x=np.zeros((16, 64), np.complex64)), "'x' is complex64; the model takes float32"),
    ("c.npz", lambda p: np.savez(p, x=_samples(4)), "4 samples, fewer than one batch of 8"),
    ("c.npz", lambda p: p.write_text("not a zip"), "is not a readable .npz"),
    ("c.txt", lambda p: p.write_text("a sentence\n"), "text needs the model's tokenizer, and this model has none"),
    ("c.csv", lambda p: p.write_text("1,2\n"), "give an .npz (one array per model input"),
    ("images", lambda p: p.mkdir(), "images need the model to take one [N, 3, H, W] image input or to have an "
                                    "image processor, and this model has neither"),
    ("none.npz", lambda p: None, "calibration data not found"),
])
def test_bad_calibration_data_is_one_line_before_calibration(mlp_file, tmp_path, capsys, name, write, message):
    write(tmp_path / name)
    assert_user_error(capsys, ["build", "--model", str(mlp_file), "--quant", "int8", "--calib-data",
                               str(tmp_path / name), "-o", str(tmp_path / "pkg")], message)
    assert not (tmp_path / "pkg").exists()


def test_calibration_data_needs_a_quantized_build(tmp_path, capsys):
    np.savez(tmp_path / "c.npz", x=_samples(8))
    assert_user_error(capsys, ["build", "--calib-data", str(tmp_path / "c.npz"), "-o", str(tmp_path / "pkg")],
                      "--calib-data calibrates quantization (and pruning, with --prune-flops or --prune-tokens): add --quant int8")


def test_text_is_tokenized_by_the_models_tokenizer_into_batches(tmp_path):
    from tvmcomp.models.minilm import tokenize

    (tmp_path / "c.txt").write_text("The first sentence.\n\nA second one, after a blank line.\nThird.\n")
    specs = [TensorSpec("input_ids", (1, 16), "int64"), TensorSpec("attention_mask", (1, 16), "int64")]
    batches = read_calibration_data(tmp_path / "c.txt", specs, lambda lines: tokenize(lines, 16))
    assert len(batches) == 3 and all(b["input_ids"].shape == (1, 16) for b in batches)
    assert all(b["input_ids"][0, 0] == 101 for b in batches)  # [CLS]: each line is one sample
    assert batches[2]["attention_mask"].sum() < batches[1]["attention_mask"].sum()  # "Third." is shorter


def test_a_labelled_tsv_gives_the_texts_as_a_txt_does_and_class_indices_in_the_same_order(tmp_path):
    from tvmcomp.calibration_data import read_labels
    from tvmcomp.models.minilm import tokenize

    (tmp_path / "c.tsv").write_text("pos\tThe first sentence.\n\nneg\tA second one, after a blank line.\npos\tThird.\n")
    (tmp_path / "c.txt").write_text("The first sentence.\nA second one, after a blank line.\nThird.\n")
    specs = [TensorSpec("input_ids", (1, 16), "int64"), TensorSpec("attention_mask", (1, 16), "int64")]
    from_tsv, from_txt = (read_calibration_data(tmp_path / name, specs, lambda lines: tokenize(lines, 16))
                          for name in ("c.tsv", "c.txt"))
    assert len(from_tsv) == 3 and all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(from_tsv, from_txt))
    labels, classes = read_labels(tmp_path / "c.tsv")
    assert classes == ["neg", "pos"] and labels.tolist() == [1, 0, 1]
    assert read_labels(tmp_path / "c.txt") is None


@pytest.mark.parametrize("text, message", [
    ("pos\tgood\nno tab on this line\n", "c.tsv line 2: a .tsv line is LABEL<TAB>TEXT, not 'no tab on this line'"),
    ("pos\tgood\npos\tfine\n", "the labels name a task's classes, at least two; found ['pos']"),
])
def test_a_bad_labelled_tsv_is_one_line_naming_the_problem(tmp_path, text, message):
    from tvmcomp.calibration_data import read_labels

    (tmp_path / "c.tsv").write_text(text)
    with pytest.raises(TvmcompError, match=re.escape(message)):
        read_labels(tmp_path / "c.tsv")


def _save_images(folder, count: int, size=(20, 30)):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "README.txt").write_text("not an image: skipped")
    return folder


def test_an_image_folder_becomes_batches_resized_and_normalized_for_the_models_image_input(tmp_path):
    from PIL import Image

    folder = _save_images(tmp_path / "images", 5)
    specs = [TensorSpec("pixels", (2, 3, 8, 12), "float32")]
    # a model file (no entry): resized to its H x W, ImageNet-normalized
    batches = read_calibration_data(folder, specs, *input_makers(None, specs))
    assert len(batches) == 2 and batches[0]["pixels"].shape == (2, 3, 8, 12)  # 5 images = 2 whole batches
    first = np.asarray(Image.open(folder / "00.png").resize((12, 8), Image.Resampling.BILINEAR), np.float32)
    want = (first.transpose(2, 0, 1) / 255 - np.array([0.485, 0.456, 0.406])[:, None, None]) \
        / np.array([0.229, 0.224, 0.225])[:, None, None]
    np.testing.assert_allclose(batches[0]["pixels"][0], want, rtol=1e-5, atol=1e-5)


def test_class_subfolders_label_their_images_class_interleaved_in_the_order_the_batches_hold_them(tmp_path):
    """torchvision's ImageFolder layout: calib/CLASS/*.png. The images come class by class in turn
    (cat 00, dog 00, cat 01, dog 01, dog 02), so the first samples pruning reads hold every class."""
    import shutil

    from tvmcomp.calibration_data import read_labels

    (tmp_path / "calib").mkdir()
    cats, dogs = _save_images(tmp_path / "calib" / "cat", 2, size=(4, 4)), _save_images(tmp_path / "calib" / "dog", 3)
    (tmp_path / "calib" / "empty").mkdir()  # a subfolder with no image is no class
    specs = [TensorSpec("pixels", (1, 3, 8, 12), "float32")]
    read = lambda folder: read_calibration_data(folder, specs, *input_makers(None, specs))  # noqa: E731
    batches = read(tmp_path / "calib")
    for batch, file in zip(batches, [cats / "00.png", dogs / "00.png", cats / "01.png", dogs / "01.png",
                                     dogs / "02.png"], strict=True):
        alone = tmp_path / f"{file.parent.name}-{file.stem}"
        alone.mkdir()
        shutil.copy(file, alone)
        np.testing.assert_array_equal(batch["pixels"], read(alone)[0]["pixels"])
    labels, classes = read_labels(tmp_path / "calib")
    assert classes == ["cat", "dog"] and labels.tolist() == [0, 1, 0, 1, 1]
    assert read_labels(cats) is None  # images of its own: unlabelled
    shutil.copytree(cats, tmp_path / "one-class" / "cat")
    with pytest.raises(TvmcompError, match=re.escape("the labels name a task's classes, at least two; found ['cat']")):
        read_labels(tmp_path / "one-class")


def test_bad_image_folders_are_one_line(tmp_path, capsys):
    from models_for_tests import save_tiny_vit

    model = save_tiny_vit(tmp_path / "vit")
    capsys.readouterr()  # transformers' save progress, not the command's
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = _save_images(tmp_path / "broken", 2)
    (broken / "01.png").write_bytes(b"not a png")
    for folder, message in ((empty, "has no images (.png, .jpg"),
                            (broken, "01.png is not a readable image (UnidentifiedImageError")):
        assert_user_error(capsys, ["build", "--model", str(model), "--quant", "int8", "--calib-data", str(folder),
                                   "-o", str(tmp_path / "pkg")], message)


def test_the_bundled_calibration_text_holds_a_phrase_every_fourth_text_in_the_sentences_words():
    """Short queries get calibrated too: texts 3, 7, 11, ... are 1, 2, 3, 1, ... words of the
    sentence they replace, from its longest word on, with no punctuation; the rest are the sentences."""
    from tvmcomp.data import lee_calibration_texts, lee_sentences

    texts, sentences = lee_calibration_texts(), lee_sentences()
    assert len(texts) == len(sentences)
    phrases = texts[3::4]
    assert [len(p.split()) for p in phrases[:6]] == [1, 2, 3, 1, 2, 3]
    for k, text in enumerate(texts):
        if k % 4 != 3:
            assert text == sentences[k]
            continue
        assert re.fullmatch(r"[\w'-]+( [\w'-]+)*", text)
        first = text.split()[0]
        assert first in sentences[k] and len(first) == max(len(re.sub(r"[^\w'-]", "", w)) for w in sentences[k].split())
