"""Where int8 attention loses accuracy on vit-s: the relative error each operand's grid puts on an
attention layer's output, measured on the float model's own tensors.

ONNX Runtime runs the vit-s encoder on the first 4 bundled digits (calibration images) with every
layer's Q and K^T (each scaled by d^-1/4), softmax output P and V as extra outputs; each grid is applied to one operand in NumPy
and the layer's ``softmax(Q K^T) V`` (or ``P V``) compared with the float one:
``|y~ - y| / |y|`` over the 4 images. Grids: per-tensor min-max 8-bit for Q and K together and for
V; for P, 8-bit steps up to its maximum (int8 before 2026-12-03), 15-bit steps (``uniform:15``,
int8's default now), log2:4 with the top at the largest probability without and with row
renormalization, and log2:3 renormalized with the top chosen by least output error
(tvmcomp.quant.attn_probs).

Run: .venv/bin/python bench/attention_error.py   (about a minute)
Writes bench/results/<date>-attention-error.md.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
IMAGES = 4


def attention_tensors(layers: int = 12) -> list[dict[str, np.ndarray]]:
    import onnx
    import onnxruntime as ort

    from tvmcomp.models import vit_s
    from tvmcomp.models.images import bundled_images

    model = onnx.load(str(vit_s.encoder_file()))
    names = {}
    for layer in range(layers):
        prefix = f"/backbone/encoder/layer.{layer}/attention/attention/"
        names[layer] = {"q": prefix + "Mul_output_0", "k": prefix + "Mul_1_output_0",
                        "p": prefix + "Softmax_output_0", "v": prefix + "Transpose_output_0"}
    wanted = [name for layer in names.values() for name in layer.values()]
    for name in wanted:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    images, _ = bundled_images(0, IMAGES)
    values = dict(zip(wanted, session.run(wanted, vit_s.preprocess(images))))
    return [{role: values[name].astype(np.float64) for role, name in layer.items()} for layer in names.values()]


def minmax(x: np.ndarray, bits: int) -> np.ndarray:
    lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
    step = (hi - lo) / (2**bits - 1)
    zero = np.round(-lo / step)
    return (np.clip(np.round(x / step) + zero, 0, 2**bits - 1) - zero) * step


def log2_grid(p: np.ndarray, top: int, bits: int, renormalize: bool) -> np.ndarray:
    bottom = top + 2**bits - 2
    e = np.round(-np.log2(np.maximum(p, 1e-300)))
    grid = np.where(e > bottom, 0.0, 2.0 ** -np.clip(e, top, bottom))
    return grid / np.maximum(grid.sum(-1, keepdims=True), 1e-300) if renormalize else grid


def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def main() -> None:
    rows = []
    for layer, t in enumerate(attention_tensors()):
        y = t["p"] @ t["v"]
        error = lambda approx: np.linalg.norm(approx - y) / np.linalg.norm(y)  # noqa: E731
        top = int(np.round(-np.log2(t["p"].max())))
        log2_3 = min(error(log2_grid(t["p"], candidate, 3, True) @ t["v"]) for candidate in range(10))
        rows.append([layer, error(softmax(minmax(t["q"], 8) @ minmax(t["k"], 8)) @ t["v"]),
                     error(t["p"] @ minmax(t["v"], 8)),
                     error((np.round(t["p"] / (t["p"].max() / 255)) * (t["p"].max() / 255)) @ t["v"]),
                     error(np.minimum(np.round(t["p"] * 2**15), 2**15 - 1) / 2**15 @ t["v"]),
                     error(log2_grid(t["p"], top, 4, False) @ t["v"]), error(log2_grid(t["p"], top, 4, True) @ t["v"]),
                     log2_3])
    date = datetime.date.today().isoformat()
    lines = [f"# vit-s: relative error of an attention layer's output per operand grid, {date}", "",
             f"bench/attention_error.py: float Q, K, P, V of every layer from ONNX Runtime on {IMAGES} digits; one "
             "operand on the grid, the rest float; |y~ - y| / |y|.", "",
             "| layer | Q, K 8-bit | V 8-bit | P 8-bit steps | P uniform:15 | P log2:4 | P log2:4 renormalized "
             "| P log2:3 renormalized, best top |", "|---|" + "---:|" * 7]
    lines += [f"| {r[0]} | " + " | ".join(f"{100 * v:.2f}%" for v in r[1:]) + " |" for r in rows]
    out = REPO / "bench" / "results" / f"{date}-attention-error.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
