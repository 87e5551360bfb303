"""Bits per parameter from the README's storage rules alone, for a resolved
:class:`gmse_cli.spec.Format` (field names only): elements at their width times the kept
density, scales (and zero points) per group, the mask's entropy or N:M pattern count.
``tests/test_gmse_rederived.py`` compares it with uscl's accounting."""

from __future__ import annotations

import math


def element_bits(q) -> float:
    g = q.grid.value
    if g == "fp":
        return 1 + q.exponent_bits + q.mantissa_bits
    if g == "lut":
        return math.log2(len(q.values))
    return float(q.bits)


SCALE_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "e8m0": 8, "e4m3": 8, "int8": 8,
              "dq8": 8 + 32 / 256}


def entropy(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def reference_bits(fmt, row_length: int) -> float:
    density, mask_bits, elem, scale = 1.0, 0.0, None, 0.0
    for st in fmt.stages:
        if st.kind == "sparsify":
            if st.pattern.value == "n:m":
                density = st.n / st.m
                mask_bits = math.log2(math.comb(st.m, st.n)) / (st.m * (st.block or 1))
            elif st.granularity == "tensor":  # one count over the whole tensor: the nominal density
                density = 1 - st.sparsity
                mask_bits = entropy(density) / (st.block or 1)
            elif st.pattern.value == "block":  # README: round-half-up(P x blocks) blocks zeroed per row
                blocks = row_length // st.block
                density = (blocks - math.floor(st.sparsity * blocks + 0.5)) / blocks
                mask_bits = entropy(density) / st.block
            else:  # README: round-half-up((1 - P) L) entries kept per row
                density = math.floor((1 - st.sparsity) * row_length + 0.5) / row_length
                mask_bits = entropy(density)
        elif st.kind == "quantize":
            elem = element_bits(st)
            g = {"row": row_length, "tensor": math.inf}.get(st.group, st.group)
            per_group = 0.0 if st.scale.value == "none" else SCALE_BITS[st.scale_format.value]
            if st.int_style is not None and st.int_style.value == "asymmetric":
                per_group += st.bits  # an integer zero point on the code range
            scale = per_group / g
    if elem is None:
        elem = 16  # kept values of a sparsity-only format count as bf16
    return elem * density + scale + mask_bits
