"""Training on the CPU near the hardware's limit, with the same regularisation as the plain recipe.

Profiling a training step on 2 cores (docs/speed.md#cpu-training) showed most of the time going to
dropout, not to matrix multiplies: PyTorch's CPU dropout draws one Mersenne-Twister number per element,
and a LoRA model in train mode applies dropout to a copy of every adapted layer's input, to every
attention-probability matrix (batch x heads x tokens x tokens) and to the hidden states. Two changes:

- `cheap_dropout` (and the `Dropout` layer): the same Bernoulli(1 - p) mask and 1/(1 - p) scaling, drawn four
  elements per 64-bit random number (16 random bits each, so p is rounded to a multiple of 1/65536) and kept
  as a bool mask for the backward pass.
- `dropout_attention`: attention whose probability dropout is that `Dropout`; outside training it is
  PyTorch's scaled_dot_product_attention, exactly as the "sdpa" implementation computes it.

Matrix multiplies in bf16 (autocast) pay off only where the CPU multiplies bf16 in hardware (Intel AMX):
training/model.py's `bf16_is_fast` says whether this one does. On a GPU none of this is used: its dropout
is already cheap.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_NAME = "cpu_dropout"  # registered with transformers' AttentionInterface by `use_cheap_dropout`
RANDOM_BITS = 16  # per element: the mask compares 16 random bits with a threshold set by p


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (p rounded to a multiple of 1/65536)."""
    count = shape.numel()
    # One 64-bit random number gives four 16-bit lanes (the full signed range: from -2**63, to 2**63 - 1).
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    lanes = words.view(torch.int16)[:count].view(shape)
    dropped = min(round(p * 2**RANDOM_BITS), 2**RANDOM_BITS - 1)  # lanes below this many values drop
    return lanes >= dropped - 2 ** (RANDOM_BITS - 1)


class _Masked(torch.autograd.Function):
    """x * mask * scale, saving only the bool mask for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, scale: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        kept = torch.where(keep, x, 0)
        return kept.mul_(scale) if scale != 1 else kept

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        kept = torch.where(keep, grad, 0)
        return (kept.mul_(ctx.scale) if ctx.scale != 1 else kept), None, None


def cheap_dropout(x: torch.Tensor, p: float, training: bool = True, scaled: bool = True) -> torch.Tensor:
    """`nn.functional.dropout` with a cheaper mask on the CPU (PyTorch's own elsewhere, and for p = 1).

    `scaled=False` leaves out the 1/(1 - p) factor, for a caller that applies it to a smaller tensor."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return nn.functional.dropout(x, p, training) * (1 if scaled else 1 - p)
    return _Masked.apply(x, p, 1.0 / (1.0 - p) if scaled else 1.0)


class Dropout(nn.Dropout):
    """Drop-in for `nn.Dropout` (same p, same state dict) using `cheap_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cheap_dropout(x, self.p, self.training)


def dropout_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """An attention implementation for transformers' AttentionInterface (same arguments as "sdpa").

    query/key/value: (batch, heads, tokens, head_dim). With dropout while training, the scores are
    computed explicitly so the probabilities can go through `cheap_dropout`; otherwise "sdpa".
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not module.training or dropout == 0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    # Both scale factors go on the small tensors (tokens x head_dim), not on the tokens x tokens ones.
    scores = torch.matmul(query * scaling, key.transpose(2, 3))  # (batch, heads, tokens, tokens)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:  # additive: 0 or a large negative number
            scores = scores + attention_mask
    probabilities = cheap_dropout(nn.functional.softmax(scores, dim=-1), dropout, scaled=False)
    scale = 1.0 / (1.0 - dropout) if dropout < 1 else 0.0  # p = 1 drops every probability
    output = torch.matmul(probabilities, value) * scale  # (batch, heads, tokens, head_dim)
    return output.transpose(1, 2).contiguous(), None


def use_cheap_dropout(model: nn.Module) -> int:
    """Swap every `nn.Dropout` of the model (base and LoRA) for `Dropout`, and its attention for
    `dropout_attention`. Returns how many dropout layers were swapped. Same p everywhere, same weights."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, dropout_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # unregistered, the padding mask would be dropped
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, inplace=child.inplace))
                swapped += 1
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(ATTENTION_NAME)
    return swapped
