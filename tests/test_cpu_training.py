"""The CPU training path (training/cpu_training.py): the cheaper dropout is the same dropout, and the
attention that uses it computes what "sdpa" computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.cpu_training import (
    ATTENTION_NAME,
    Dropout,
    cheap_dropout,
    dropout_attention,
    keep_mask,
    use_cheap_dropout,
)
from training.model import LoraSettings, build_classifier


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    keep = keep_mask(torch.Size((1000, 1001)), p)  # an odd count: the last 64-bit word is only partly used
    assert keep.dtype == torch.bool and keep.shape == (1000, 1001)
    # one standard error of the rate over 1,001,000 elements is at most 0.0005
    assert keep.float().mean().item() == pytest.approx(1 - p, abs=0.003)
    # independent across positions: neighbouring elements agree as often as two independent draws would
    agree = (keep[:, 1:] == keep[:, :-1]).float().mean().item()
    assert agree == pytest.approx(p**2 + (1 - p) ** 2, abs=0.003)


def test_dropout_zeroes_dropped_elements_scales_kept_ones_and_routes_gradients_the_same_way():
    torch.manual_seed(0)
    x = torch.randn(64, 128, requires_grad=True)
    out = cheap_dropout(x, 0.25)
    kept = out != 0
    assert 0.70 < kept.float().mean().item() < 0.80
    assert torch.allclose(out[kept], x[kept] / 0.75)
    out.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.75)  # gradient flows only through kept elements, scaled alike
    assert cheap_dropout(x, 0.25, training=False) is x and cheap_dropout(x, 0.0) is x
    assert torch.equal(cheap_dropout(x, 1.0), torch.zeros_like(x))


def test_dropout_keeps_the_dtype_so_it_works_under_bf16_autocast():
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    assert cheap_dropout(x, 0.1).dtype == torch.bfloat16


def _qkv(batch=3, heads=2, tokens=7, head_dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, head_dim, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_attention_in_training_computes_what_sdpa_computes_when_nothing_is_dropped(mask_kind):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    query, key, value = _qkv()
    lengths = torch.tensor([7, 4, 2])
    attend = (torch.arange(7)[None, :] < lengths[:, None])[:, None, None, :].expand(3, 1, 7, 7)  # (batch,1,q,k)
    mask = {"none": None, "bool": attend, "additive": torch.zeros(attend.shape).masked_fill(~attend, -1e9)}[mask_kind]
    module = nn.Module().train()
    module.is_causal = False
    expected, _ = sdpa_attention_forward(module.eval(), query, key, value, mask, dropout=0.0)
    # p = 1e-9 rounds to a threshold of 0: the explicit training path runs and keeps every probability
    got, _ = dropout_attention(module.train(), query, key, value, mask, dropout=1e-9)
    assert torch.allclose(got, expected, atol=1e-5)
    dropped, _ = dropout_attention(module.train(), query, key, value, mask, dropout=0.5)
    assert not torch.allclose(dropped, expected, atol=1e-3)  # and with p = 0.5 it does drop
    everything, _ = dropout_attention(module.train(), query, key, value, mask, dropout=1.0)
    assert torch.equal(everything, torch.zeros_like(everything))  # p = 1: nothing left, and no division by zero


def test_the_model_keeps_every_dropout_rate_and_predicts_exactly_as_before_outside_training(tiny_distilbert):
    torch.manual_seed(0)
    model = build_classifier(str(tiny_distilbert), LoraSettings(rank=4, alpha=8, dropout=0.1))
    rates = sorted(m.p for m in model.modules() if isinstance(m, nn.Dropout))
    ids = torch.randint(1000, 2000, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    before = model.eval()(input_ids=ids, attention_mask=mask).logits

    swapped = use_cheap_dropout(model)
    assert swapped == len(rates) > 0
    assert not [m for m in model.modules() if type(m) is nn.Dropout]
    assert sorted(m.p for m in model.modules() if isinstance(m, Dropout)) == rates
    assert model.get_base_model().config._attn_implementation == ATTENTION_NAME
    after = model.eval()(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(after, before, atol=1e-7)  # padding masked exactly as before

    model.train()
    outputs = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1]))
    outputs.loss.backward()
    lora_grads = [p.grad for name, p in model.named_parameters() if "lora_" in name and p.requires_grad]
    assert lora_grads and all(g is not None and torch.isfinite(g).all() for g in lora_grads)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_train_py_on_the_cpu_trains_with_cheap_dropout_in_bf16_or_fp32(
    tiny_distilbert, small_imdb, tmp_path, monkeypatch, precision
):
    from safetensors.torch import load_file

    from tests.conftest import tiny_train_config
    from training import train

    swapped = []
    monkeypatch.setattr(train, "use_cheap_dropout", lambda model: swapped.append(use_cheap_dropout(model)))
    summary = train.main(tiny_train_config(tiny_distilbert, small_imdb, tmp_path, max_steps=6, precision=precision))
    assert summary["precision"] == precision and swapped and swapped[0] > 0
    assert np.isfinite(summary["validation"]["log_loss"])
    # bf16 is autocast: the trained weights the adapter keeps are fp32 either way
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
    # It trained: LoRA's B matrices start at zero, so each one the optimizer reached is now non-zero and finite.
    lora_b = {name: tensor for name, tensor in weights.items() if "lora_B" in name}
    assert lora_b and all(torch.isfinite(b).all() and b.abs().max() > 0 for b in lora_b.values()), sorted(lora_b)


def test_torch_dropout_keeps_pytorchs_dropout_and_attention(tiny_distilbert, small_imdb, tmp_path, monkeypatch):
    from tests.conftest import tiny_train_config
    from training import config as config_module
    from training import train

    monkeypatch.setattr(train, "use_cheap_dropout", lambda model: pytest.fail("--torch-dropout must not swap"))
    config = config_module.parse_args(["--torch-dropout", "--precision", "fp32"])
    assert config.cheap_cpu_dropout is False
    train.main(tiny_train_config(tiny_distilbert, small_imdb, tmp_path, max_steps=2, cheap_cpu_dropout=False))
