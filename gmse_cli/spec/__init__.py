"""The format language: what a compressed numeric format *is*, as validated data.

A :class:`Format` is an ordered tuple of stages applied to a tensor viewed as rows (the input
dimension of a linear layer is the row):

    rotate* -> sparsify? -> (quantize | vq)?

- :class:`Rotate`   -- blockwise Hadamard transform (orthonormal; no effect on GMSE).
- :class:`Sparsify` -- unstructured magnitude, N:M (of entries, or of blocks of K entries
  ranked by L2 norm: ``N:MxK``), or block pruning.
- :class:`Quantize` -- a scalar grid (``int``, ``fp``, ``lut``, ``lloyd-max``) with a scale
  rule (``absmax``, ``rms``, ``mse``, ``none``), a granularity (tensor, row, group of g), a
  storage format for the scales (fp32, bf16, fp16, e8m0, e4m3, int8, dq8), the rounding of e8m0
  scales (floor, ceil, even, rceil, nearest), what a cast does beyond its largest value
  (saturate or inf) and how a lut picks its level (nearest, bitsandbytes).
- :class:`VQ`       -- a d-dimensional codebook with 2^(bits*d) entries.

Sparsify then quantize quantizes only the kept values; the quantizer's scale statistics cover
the kept values too, or every entry of the group before pruning (``scale_stats = "all"``,
QuEST's FourEight convention). A :class:`Scheme` pairs a weight format
with an optional activation format; capacities multiply.

Three ways to name a format resolve to the same model (:func:`resolve_format`): a catalog name
(``mxfp4``), a TOML file, or the inline shorthand documented in :data:`SHORTHAND_HELP`.

Modules, each importing only those above it:

- :mod:`~gmse_cli.spec.vocab`      -- closed vocabularies (enums), the spec base model, constants
- :mod:`~gmse_cli.spec.stages`     -- the four stages
- :mod:`~gmse_cli.spec.format`     -- :class:`Format` and :class:`Scheme`
- :mod:`~gmse_cli.spec.formatfile` -- a format as a TOML file, read and written
- :mod:`~gmse_cli.spec.catalog`    -- the shipped formats by name
- :mod:`~gmse_cli.spec.shorthand`  -- the inline grammar and :func:`resolve_format`
"""

from gmse_cli.spec.catalog import catalog, catalog_names
from gmse_cli.spec.format import Format, Scheme
from gmse_cli.spec.formatfile import format_to_toml, load_format_toml
from gmse_cli.spec.shorthand import (
    SHORTHAND_HELP,
    as_format_list,
    parse_shorthand,
    resolve_format,
    resolve_formats,
)
from gmse_cli.spec.stages import VQ, Quantize, Rotate, Sparsify, Stage
from gmse_cli.spec.vocab import (
    DEFAULT_ROW_LENGTH,
    DQ_BLOCK,
    MAX_ROW_LENGTH,
    SCALE_FORMAT_BITS,
    TENSOR_LEVEL_SCALE_FORMATS,
    Family,
    FpStyle,
    GridKind,
    IntStyle,
    LutRounding,
    Overflow,
    ScaleFormat,
    ScaleRounding,
    ScaleRule,
    ScaleStats,
    SparsityPattern,
    check_row_length,
    fp_max,
)

__all__ = [
    "DEFAULT_ROW_LENGTH",
    "MAX_ROW_LENGTH",
    "check_row_length",
    "Family",
    "GridKind",
    "IntStyle",
    "FpStyle",
    "ScaleRule",
    "ScaleStats",
    "ScaleFormat",
    "ScaleRounding",
    "Overflow",
    "LutRounding",
    "DQ_BLOCK",
    "SparsityPattern",
    "Quantize",
    "Sparsify",
    "VQ",
    "Rotate",
    "Stage",
    "Format",
    "Scheme",
    "SCALE_FORMAT_BITS",
    "TENSOR_LEVEL_SCALE_FORMATS",
    "SHORTHAND_HELP",
    "catalog",
    "catalog_names",
    "resolve_format",
    "resolve_formats",
    "as_format_list",
    "parse_shorthand",
    "load_format_toml",
    "format_to_toml",
    "fp_max",
]
