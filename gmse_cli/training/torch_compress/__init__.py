"""Differentiable compressors: torch twins of :mod:`gmse_cli.compress` with training gradients.

Forward: :func:`compress_torch` returns the same tensor as ``gmse_cli.compress.compress`` (its
numba path) on the same float32 input, on any device; it is also the GMSE engine's
``--backend torch``. Two code paths, tested against each other and against the numpy twins:

- ``kernels="torch"`` (every device; what a GPU runs): the numpy kernels' float64 arithmetic
  repeated in torch float64, the Hadamard butterflies in float32 in the numba kernel's order,
  exact nearest-codeword search in float64. Equal bit for bit except where a value sits exactly
  on a rounding boundary and two sums of squares differ in their last float64 bit.
- ``kernels="auto"`` (default): CPU tensors go through gmse_cli.compress's own numba kernels
  (the same bits by construction) plus small kernels for the masks (:mod:`.cpu_kernels`).

Backward (the estimator), stage by stage, composed by autograd in stage order:

- rotations: exact (the transform is linear and orthonormal: dL/dx = H^T dL/dy).
- sparsify: the forward keeps the mask M_fw (magnitude, N:M or N:M of blocks, N:MxK,
  recomputed on every call, i.e. every step); the gradient is straight-through (dL/dx = dL/dy,
  so pruned weights keep learning and can come back), or with RBBM (``rbbm_p = p``; not for
  blocks, whose ranks are norms, not magnitudes) masked by
  M_bw = (|x| < min(T_p, T_k)) | (|x| > max(T_p, T_k)), T_p = RMS(x) * Phi^-1(0.5 + p) and
  T_k the smallest kept magnitude (per row, or per tensor for tensor granularity; per M-group
  for N:M) -- paper.md section 3.
- scalar quantize: straight-through with QuEST's trust mask. A value's gradient passes if it
  lies inside the grid's range widened by half the outermost gap on each side, in scaled units:
  lo - g_lo/2 <= x/s <= hi + g_hi/2. For QuEST's midrise grid (levels +-1, gap 2/(2^b - 1),
  s = a_b RMS) this is exactly |q(x) - x| <= RMS a_b/(2^b - 1), half a step; inside the range
  the nearest level is always within half the local gap, so only clipped outliers are cut.
  The same rule for fp (the gap below the largest value), lut, Lloyd-Max, signed and asymmetric grids (shifted
  by the zero point); all-zero groups pass their (zero) gradient. With ``scale_stats = "all"``
  the scale is the whole (unpruned) group's, and the band is checked on the pruned tensor, so
  pruned entries (zeros) keep their straight-through gradient. (QuEST's FourEight checks
  |q(x) - x| with q(x) = 0 at pruned entries instead, passing a pruned entry's gradient only
  where |x| is within half a step.)
- vq: straight-through, masked where ||v||^2 > R^2 for the scaled d-dimensional slice v, with
  R = the largest codeword norm + half the distance from that codeword to its nearest
  neighbour (in one dimension: the outermost level + half the outermost gap, the scalar rule).

With ``trust=False`` every lossy stage is plainly straight-through.

Modules: :mod:`.ste` (the masked straight-through function), :mod:`.scalar`, :mod:`.sparsity`,
:mod:`.rotate`, :mod:`.vq` (one per stage family, each the twin of its gmse_cli.compress
module), :mod:`.cpu_kernels` (numba kernels of the CPU trust mask), :mod:`.compressor`
(:class:`TorchCompressor`, the stages composed).
"""

from gmse_cli.training.torch_compress.compressor import TorchCompressor, compress_torch
from gmse_cli.training.torch_compress.rotate import hadamard_torch
from gmse_cli.training.torch_compress.scalar import trust_mask
from gmse_cli.training.torch_compress.sparsity import rbbm_mask, sparsity_mask_torch
from gmse_cli.training.torch_compress.vq import vq_trust_radius

__all__ = [
    "compress_torch",
    "TorchCompressor",
    "trust_mask",
    "rbbm_mask",
    "hadamard_torch",
    "sparsity_mask_torch",
    "vq_trust_radius",
]
