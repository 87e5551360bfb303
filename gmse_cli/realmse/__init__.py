"""Real-weight MSE: how far a checkpoint's weights are from the Gaussian that GMSE assumes --
and, with a model run on text, how far its activations are (:mod:`.activations`).

For each format and each selected weight matrix W (rows = the input dimension),

    MSE_layer = ||W - C(W)||^2 / ||W||^2

and the checkpoint's MSE is the parameter-weighted mean of the layer values (each layer's
relative error counts in proportion to the parameters it holds, like the capacity law's N).
Beside it: the GMSE at the same row lengths (parameter-weighted likewise), their ratio, the
effective bits log_{1/4}(MSE), and the capacity the law predicts from each. Capacities
factorize over lossy stages, as in the paper: a composite format's capacity is the product
of the family curves at each stage's own MSE (stage alone on the same weights, or alone on
Gaussian rows for GMSE).

Decisions worth knowing:

- A layer whose row length a format cannot split (a group of 128 on a row of 96) is *skipped*
  for that format and listed in ``skipped`` with the reason; it is never padded, because
  padding changes what is measured (the last group's scale statistics, the rotation).
- Row-local formats run on chunks of rows (``chunk_bytes`` of float32 at a time). A scalar
  quantizer with a per-tensor second-level scale (e4m3 as in NVFP4, int8) streams in two
  passes: the first finds the tensor's largest raw group scale, the second quantizes each
  chunk with it (the same result as the whole tensor). Formats with another per-tensor
  statistic (``tensor`` granularity, tensor-wide sparsity, a VQ with a two-level scale) see
  the whole tensor at once, with ``sample`` too (only the sampled rows' errors are kept:
  the sampled rows' own statistic would not be the tensor's): it is read into one float32
  array (block by block, no second copy), and the peak is that array, the compressed copy
  and the compressor's working arrays for the largest layer.
- ``sample`` measures a random subset of rows of every layer; the layer estimate is a ratio of
  sums with a finite-population-corrected delta-method interval, combined over layers as
  independent strata.
- A Hadamard rotation does not change GMSE (a rotated i.i.d. Gaussian row is again i.i.d.
  Gaussian), so the rotated variant reuses its base format's GMSE.

Modules: :mod:`.checkpoint` finds a checkpoint's safetensors files; :mod:`.tensorfile` checks
one file's header and reads its rows a chunk at a time;
:mod:`.layers` chooses the layers and rows and how each format streams them;
:mod:`.measure` computes the per-layer ratios and intervals; :mod:`.report` assembles
:class:`FormatMse` with GMSE and capacities; :mod:`.plot` draws each layer's MSE / GMSE;
:mod:`.activations` measures the inputs of a model's linear layers (torch, from the training
extra, imported only when it runs) into :mod:`.activation_report`'s models.
"""

from gmse_cli.realmse.activation_report import ActivationLayer, ActivationReport, SchemeCapacity
from gmse_cli.realmse.activations import measure_activations
from gmse_cli.realmse.checkpoint import Checkpoint, checkpoint_name, open_checkpoint
from gmse_cli.realmse.layers import (
    DEFAULT_EXCLUDE,
    VISION_ENCODER,
    checkpoint_notes,
    layer_kind,
    matches,
    model_order,
    row_local,
    select_layers,
    stratified_rows,
)
from gmse_cli.realmse.measure import (
    MeasuredLayer,
    SkippedLayer,
    measure_layers,
    ratio_estimate,
    ratio_influence,
    row_errors,
)
from gmse_cli.realmse.plot import mse_figure, plot_mse
from gmse_cli.realmse.report import (
    FormatMse,
    LayerMse,
    MsePlan,
    StageMse,
    assemble_results,
    measure_mse,
    plan_targets,
    resolve_law,
    stage_targets,
    with_hadamard,
)
from gmse_cli.realmse.tensorfile import (
    DEFAULT_CHUNK_BYTES,
    TensorInfo,
    chunk_rows,
    iter_row_chunks,
    read_rows,
    read_tensor,
)

__all__ = [
    "LayerMse",
    "SkippedLayer",
    "StageMse",
    "FormatMse",
    "measure_mse",
    "plot_mse",
    "mse_figure",
    "measure_layers",
    "MsePlan",
    "plan_targets",
    "assemble_results",
    "MeasuredLayer",
    "stratified_rows",
    # activations
    "ActivationLayer",
    "ActivationReport",
    "SchemeCapacity",
    "measure_activations",
    "with_hadamard",
    "row_local",
    "row_errors",
    "ratio_estimate",
    "ratio_influence",
    "stage_targets",
    "resolve_law",
    # checkpoints and layers
    "TensorInfo",
    "Checkpoint",
    "open_checkpoint",
    "checkpoint_name",
    "select_layers",
    "read_rows",
    "iter_row_chunks",
    "read_tensor",
    "chunk_rows",
    "matches",
    "model_order",
    "layer_kind",
    "DEFAULT_EXCLUDE",
    "VISION_ENCODER",
    "checkpoint_notes",
    "DEFAULT_CHUNK_BYTES",
]
