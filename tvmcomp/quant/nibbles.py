"""Two 4-bit codes per byte: how int4 tensors are stored, and the Relax and TE that read them back.

A signed code ``c`` in [-8, 7] is stored offset-binary, ``c + 8`` in [0, 15]. Along the last axis
(even length ``2h``), byte ``i`` holds code ``i`` in its low nibble and code ``i + h`` in its high
nibble (llama.cpp's Q4_0 halves, over a whole row)::

    byte[i] = (c[i] + 8) | (c[i + h] + 8) << 4

so reading back is a mask and a shift, each giving a contiguous half, with no interleaving::

    c = concat([byte & 15, byte >> 4]) - 8
"""

from __future__ import annotations

import numpy as np

OFFSET = 8  # a signed 4-bit code plus 8 is its stored nibble


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """int codes in [-8, 7], last axis even -> uint8 with half as many entries on the last axis."""
    codes = np.asarray(codes)
    half = codes.shape[-1] // 2
    if codes.shape[-1] % 2 or codes.min(initial=0) < -OFFSET or codes.max(initial=0) > OFFSET - 1:
        raise ValueError("4-bit packing takes codes in [-8, 7] along an even last axis")
    stored = (codes.astype(np.int16) + OFFSET).astype(np.uint8)
    return stored[..., :half] | (stored[..., half:] << 4)


def unpack_nibbles(packed):
    """Relax: uint8 ``[..., h]`` -> the stored nibbles ``[..., 2h]`` (uint8, ``code + 8``)."""
    from tvm import relax

    low = relax.op.bitwise_and(packed, relax.const(15, "uint8"))
    high = relax.op.right_shift(packed, relax.const(4, "uint8"))
    return relax.op.concat([low, high], axis=-1)


def nibble_code(byte, high: bool):
    """TE/TIR: the signed code in the low or the high nibble of ``byte``. Integer kernels read packed
    weights through this expression, and the int4 dot intrinsics describe it. ``high`` is a Python
    bool, not a loop variable: a kernel's loop variables are int64 in Relax and int32 in an
    intrinsic's description, so an expression of one would not match the other."""
    code = byte.astype("int32")
    return ((code >> 4 if high else code) & 15) - OFFSET
