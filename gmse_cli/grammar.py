"""The format shorthand's grammar as help text (parsed by :mod:`gmse_cli.spec.shorthand`).

Plain text on the ground floor, so that ``uscl --help`` shows it without importing the format
models (pydantic and the catalog); :data:`gmse_cli.spec.SHORTHAND_HELP` is the same string.
"""

__all__ = ["SHORTHAND_HELP"]

SHORTHAND_HELP = """\
A FORMAT is a catalog name (see `uscl formats`), a path to a .toml file, or a
shorthand:

  stage[+stage...]   stages run left to right: rotate, sparsify, then
                     quantize/vq
  stage = base[-modifier...]

Bases:
  <catalog name>     any single-stage catalog entry: int4, fp4, nf4, mxfp4,
                     nvfp4, 2:4 ...
  intB               QuEST midrise grid, 2^B levels, scale = a_B * RMS
                     (B = 1..16)
  sintB | aintB      signed symmetric (-(2^(B-1)-1) ... 2^(B-1)-1) /
                     asymmetric (zero point) integers, absmax scale
  fintB              full-range symmetric integers -2^(B-1) ... 2^(B-1)-1,
                     scale amax / ((2^B-1)/2): the W4A16 convention
                     (w4a16 = fint4-g128-sfp16)
  eXmY               floating point with X exponent and Y mantissa bits
                     (fp4 = e2m1)
  lmB                Lloyd-Max: the Gaussian-MSE-optimal 2^B levels (also
                     lloyd-max-B)
  lut[v1,v2,...]     an explicit list of grid values
  N:M                keep the N largest |x| of every M consecutive entries
  N:MxK              keep the N of every M consecutive blocks of K entries
                     with the largest L2 norm (2:4x2: QuEST's pairs); M*K
                     must divide the row
  sparseP            unstructured magnitude pruning of P percent (also
                     sparse-P)
  blockK-P           zero P percent of the blocks of K consecutive entries
  vqD-bB             D-dimensional Gaussian-optimal codebook, B bits per
                     coordinate
  e8p                8-dimensional E8-lattice codebook, 2 bits per coordinate
  hadK               Hadamard rotation in blocks of K (had = had128)
  bf16 | fp16 | fp32 plain casts

Modifiers (quantize stages):
  gN | row | tensor  scale granularity: groups of N, per row, per tensor
  absmax | rms | mse scale rule; rmsC sets scale = C * RMS (e.g. rms2.5);
                     plain rms takes the Gaussian-MSE-optimal C (where
                     minima tie, as e5m2's a factor 2 apart do, the
                     largest: it clips outliers least)
  absmean[C]         scale = C * mean |x| of the group, C = 1 unless given
                     (BitNet b1.58: lut[-1,0,1]-tensor-absmean)
  sfp32 sbf16 sfp16 se8m0 se4m3 sint8 sdq8
                     the format scales are stored in (sdq8: bitsandbytes'
                     double quantization)
  floor | ceil | even | rceil | nearest
                     how e8m0 scales round (mxfp4-rceil: NVIDIA's hardware
                     rule)
  inf | saturate     beyond the largest value: overflow to inf (IEEE) or
                     saturate
  bnb                a lut rounds in bitsandbytes' float32 arithmetic
  keptstats | allstats
                     after a sparsify stage, scale statistics over the kept
                     entries (default) or all entries before pruning
                     (QuEST's FourEight)

Examples: int4, 2:4+int4, had128+int3, e2m1-g32-absmax-se8m0 (= mxfp4),
sint4-g64, lm3-g128, sparse30+int4, vq4-b2, lut[-1,0,1]-rms1.224,
mxfp8-e4m3-rceil, fint4-g64-sbf16, nf4-sdq8, fp16-saturate,
had128+2:4x2+int4-allstats (QuEST's FourEight)"""
