"""The train step's memory on one device of a target, allocating nothing: what
`int-jax plan` adds for configs that train (SFT, GRPO).

Why a model of the step rather than compiling it: the step of a 4B model at 16K
tokens cannot be compiled for a TPU or GPU here, and compiling all of it on the CPU
takes minutes. So the step is split into pieces whose memory adds up:

- gradients, from shapes (plan.py sizes the parameters): one micro-batch's gradient,
  sharded like the parameters in their dtype; the running sum of the accumulation scan
  (`step.make_train_step`) when an update takes more than one micro-batch; after the
  backward, the optimizer's update (one more parameter-sized tree).
- saved activations: what one decoder layer's backward keeps from its forward under
  the config's remat policy, read from the traced `jax.vjp` (its residuals, the
  layer's weights left out; shapes only), times the layer count.
- the largest temporaries, from XLA's memory analysis
  (`jit(...).lower(...).compile().memory_analysis()`: temporaries, arguments and
  outputs) of two pieces compiled on this CPU at one device's shapes (the rows of a
  micro-batch on one device, the whole sequence, heads, MLP width and vocabulary
  divided by what the rules split over `tensor`):
  * one decoder layer's forward + backward with the config's remat policy and attention
    kernel; its arguments and outputs include the layer's weights gathered whole in the
    compute dtype and their whole gradient, as a device holds them under fsdp before
    the reduce-scatter;
  * the loss: final norm and the chunked vocabulary projection, forward + backward: a
    chunk's fp32 logits, their gradient, the projection's gathered weights and gradient
    (`vocab_objective`, which forms that gradient in the forward pass; GRPO's adds
    the entropy).
  The step's peak beyond the train state: the gradients, plus the larger of the loss's
  backward (every layer's saved activations live), a layer's backward (all but one
  layer's), or the optimizer's update.

Error sources. Overestimates: XLA's CPU backend computes much bf16 work in fp32 and
fuses less than the TPU / GPU backends (its one-layer temporaries are several times
the layer's activations); saved activations shrink during the backward while the
gradient grows, and both are counted whole. Either way: the target's attention kernel
(splash on TPU, cuDNN / Triton on GPU) cannot compile here, so `flash` stands in (it
keeps the same residuals, the output and log-sum-exp, and O(T x block) temporaries;
the plan says so). Not counted: a TPU / GPU scheduler prefetching the next layer's
gathered weights, collectives' buffers, memory outside XLA's pool. Not measured at all
(an assumption): that the target's compiler keeps only what the remat policy saves,
as TPU and GPU XLA do; XLA's CPU scheduler does not (it computes a layer's
recomputation early), which is why saved activations are read from the trace and not
from a compile of several layers. Without remat, the larger of the trace and a two- minus
one-layer compile: the hand-written backward rules (models/swiglu.py, rms_norm.py) save
few residuals, and XLA's CPU schedule computes some of their backward terms early and
keeps them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
from flax import nnx

from int_jax.models import qwen3
from int_jax.train.vocab_objective import vocab_objective, weighted_nll

# Target kernels that cannot compile on this CPU, and the kernel compiled instead.
STAND_IN = {"splash": "flash", "triton": "flash", "cudnn": "flash"}


@dataclasses.dataclass(frozen=True)
class StepShape:
    """What one device's pieces are compiled at (hashable: measurements are cached)."""

    arch: qwen3.Qwen3Config  # heads, MLP width and vocabulary as one device holds them
    rows: int  # rows of a micro-batch on one device
    seq_len: int
    dtype: str  # compute dtype name
    loss_chunk: int
    entropy: bool  # the loss computes next-token entropy too (GRPO)


@dataclasses.dataclass(frozen=True)
class Measured:
    """Bytes per device of the pieces (see the module docstring)."""

    saved_per_layer: int  # from the trace
    layer: int  # XLA: temporaries + arguments + outputs of one layer's forward + backward
    loss: int  # XLA: the same of the loss's


@dataclasses.dataclass
class TrainMemory:
    """Per device, in bytes, beyond the parameters and optimizer state."""

    kind: str  # "SFT" or "GRPO"
    rows: int  # per device per micro-batch
    seq_len: int
    accum: int  # micro-batches per update
    remat: str
    kernel: str  # the target's attention kernel
    compiled_kernel: str  # what compiled here ("" when nothing was measured)
    layers: int
    gradients: int
    accumulation: int
    update: int
    boundary: int = 0  # the embedding's output and the final hidden states
    saved: int = 0  # every layer's saved activations
    layer_backward: int = 0  # one layer's backward: temporaries, gathered weights, gradient
    loss_backward: int = 0
    measured: bool = False

    @property
    def backward(self) -> int:
        """Bytes live at the worst point of the backward (beyond the running gradients)."""
        per_layer = self.saved // max(self.layers, 1)
        return self.boundary + max(self.saved + self.loss_backward,
                                   self.saved - per_layer + self.layer_backward)

    @property
    def peak(self) -> int:
        return self.gradients + self.accumulation + max(self.backward, self.update)


def kernel_here(kernel: str) -> str:
    """The kernel compiled on this CPU for a target's `kernel` (itself where it can)."""
    return STAND_IN.get(kernel, kernel)


def step_memory(*, kind: str, arch: qwen3.Qwen3Config, kernel: str, shape: StepShape | None,
                layers: int, accum: int, param_bytes: int) -> TrainMemory:
    """The step's memory per device. `param_bytes`: one device's parameters (their
    dtype). `shape` None: nothing measured (gradients and update only)."""
    mem = TrainMemory(kind=kind, rows=shape.rows if shape else 0,
                      seq_len=shape.seq_len if shape else 0, accum=accum, remat=arch.remat,
                      kernel=kernel, compiled_kernel="", layers=layers, gradients=param_bytes,
                      accumulation=param_bytes if accum > 1 else 0, update=param_bytes)
    if shape is None:
        return mem
    m = measure(shape)
    compute = np.dtype(jnp.dtype(shape.dtype)).itemsize
    mem.compiled_kernel = shape.arch.attention_impl
    mem.boundary = 2 * shape.rows * shape.seq_len * arch.hidden_size * compute
    mem.saved = layers * m.saved_per_layer
    mem.layer_backward = m.layer
    mem.loss_backward = m.loss
    mem.measured = True
    return mem


@functools.lru_cache(maxsize=64)
def measure(shape: StepShape) -> Measured:
    return Measured(saved_per_layer=_saved_per_layer(shape), layer=_compiled(*_layer_piece(shape)),
                    loss=_compiled(*_loss_piece(shape)))


def _compiled(fn, *args) -> int:
    """XLA's bytes of `fn` compiled here: temporaries, arguments and outputs."""
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
               - m.alias_size_in_bytes)


def _abstract(arch: qwen3.Qwen3Config, dtype):
    model = nnx.eval_shape(lambda: qwen3.Qwen3(arch, dtype=dtype, param_dtype=dtype))
    return nnx.split(model)


def _layer_forward(shape: StepShape, layers: int = 1):
    """(forward(params, x, positions, q_index, segments) of `layers` decoder layers under
    the remat policy, their abstract weights in the compute dtype, x, an int [rows, T]
    input)."""
    dtype = jnp.dtype(shape.dtype)
    # A one-row vocabulary: the embedding is not part of this piece.
    graphdef, params = _abstract(shape.arch.replace(num_layers=layers, vocab_size=1,
                                                    tie_word_embeddings=True), dtype)

    def forward(params, x, positions, q_index, segments):
        model = nnx.merge(graphdef, params)
        return model._run_layers(x, positions, q_index, segments, segments, None)[0]

    x = jax.ShapeDtypeStruct((shape.rows, shape.seq_len, shape.arch.hidden_size), dtype)
    return forward, params, x, jax.ShapeDtypeStruct((shape.rows, shape.seq_len), jnp.int32)


def _saved_per_layer(shape: StepShape) -> int:
    """Bytes the backward of one layer keeps from its forward: the pullback's residuals
    (`_residual_bytes`); without remat, at least what XLA's CPU schedule keeps per layer
    (`_kept_per_layer`), which is more where it computes parts of a hand-written backward
    (models/swiglu.py, rms_norm.py) during the forward and holds the results. With a
    remat policy the residuals alone: the CPU's early recomputation would count whole
    layers (see the module docstring)."""
    traced = _residual_bytes(shape)
    if shape.arch.remat != "none":
        return traced
    return max(traced, _kept_per_layer(shape))


def _kept_per_layer(shape: StepShape) -> int:
    """XLA's temporaries of a two-layer forward + backward minus a one-layer one."""
    def temp(layers):
        fn, *args = _layer_piece(shape, layers)
        return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)

    return max(temp(2) - temp(1), 0)


def _residual_bytes(shape: StepShape) -> int:
    """Bytes of one layer's pullback residuals, leaving out its weights and int inputs
    (the parameters, and arrays every layer shares, are counted once elsewhere), keeping
    its input activation."""
    forward, params, x, ints = _layer_forward(shape)

    def residuals(params, x, positions, q_index, segments):
        return jax.vjp(lambda p, h: forward(p, h, positions, q_index, segments), params, x)[1]

    closed = jax.make_jaxpr(residuals)(params, x, ints, ints, ints)
    invars = closed.jaxpr.invars
    x_var = invars[len(jax.tree.leaves(params))]
    shared = set(invars) - {x_var}
    kept, total = set(), 0
    for var in closed.jaxpr.outvars:
        if isinstance(var, jax_core.Literal) or var in shared or var in kept:
            continue
        kept.add(var)
        total += math.prod(var.aval.shape) * var.aval.dtype.itemsize
    return total


def _layer_piece(shape: StepShape, layers: int = 1):
    """`layers` decoder layers' forward + backward (one: the plan's layer piece), and its
    abstract arguments."""
    forward, params, x, ints = _layer_forward(shape, layers)

    def fwd_bwd(params, x, positions, q_index, segments, cotangent):
        _, pullback = jax.vjp(lambda p, h: forward(p, h, positions, q_index, segments),
                              params, x)
        return pullback(cotangent)

    return fwd_bwd, params, x, ints, ints, ints, x


def _loss_piece(shape: StepShape):
    """The final norm and chunked vocabulary projection's forward + backward over one
    device's hidden states, and its abstract arguments."""
    dtype = jnp.dtype(shape.dtype)
    graphdef, params = _abstract(shape.arch.replace(num_layers=0), dtype)
    rows, t, d = shape.rows, shape.seq_len, shape.arch.hidden_size

    def fwd_bwd(params, hidden, targets):
        def loss(params, hidden):
            model = nnx.merge(graphdef, params)
            if not shape.entropy:  # SFT's loss
                return weighted_nll(model, model.norm(hidden), targets,
                                    jnp.ones(targets.shape, jnp.float32),
                                    chunk_size=shape.loss_chunk)
            # GRPO's: a per-token term of the logprob and the entropy
            total, _, _ = vocab_objective(model, model.norm(hidden), targets,
                                          lambda lp, ent, aux: lp + ent, {},
                                          entropy=True, chunk_size=shape.loss_chunk)
            return total

        _, pullback = jax.vjp(loss, params, hidden)
        return pullback(jnp.ones((), jnp.float32))

    return (fwd_bwd, params, jax.ShapeDtypeStruct((rows, t, d), dtype),
            jax.ShapeDtypeStruct((rows, t), jnp.int32))
