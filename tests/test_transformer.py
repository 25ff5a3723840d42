import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepgrad.transformer import (
    Encoder,
    EncoderLayer,
    LayerNorm,
    MultiHeadAttention,
    attention,
    deepnorm_constants,
    final_error,
    mean_cosine,
    sequence_task,
    softmax_jacobian,
    train_task,
    warmup_linear,
)


def _pair(norm_first: bool, d_model=12, heads=3, d_ff=20, fused_norm=False):
    """A torch layer (float64, train mode) and ours with its weights copied over."""
    theirs = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=d_ff, dropout=0.0, batch_first=True,
                                        norm_first=norm_first).double()
    with torch.no_grad():  # non-trivial layer-norm parameters and biases, so that copying them matters
        for p in theirs.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    mine = EncoderLayer(d_model, heads, d_ff, norm="pre" if norm_first else "post",
                        fused_norm=fused_norm).double().copy_from(theirs)
    return mine, theirs


@pytest.mark.parametrize("fused_norm", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch_outputs_and_gradients(norm_first, fused_norm):
    mine, theirs = _pair(norm_first, fused_norm=fused_norm)
    x = torch.randn(4, 7, 12, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    target = torch.randn(4, 7, 12, dtype=torch.float64)
    out_a, out_b = mine(xa), theirs(xb)
    torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-10)
    (out_a * target).sum().backward()
    (out_b * target).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-10)
    sa, d = theirs.self_attn, 12
    in_proj = torch.cat([mine.attn.query.weight.grad, mine.attn.key.weight.grad, mine.attn.value.weight.grad])
    torch.testing.assert_close(in_proj, sa.in_proj_weight.grad, rtol=1e-10, atol=1e-10)
    in_bias = torch.cat([mine.attn.query.bias.grad, mine.attn.key.bias.grad, mine.attn.value.bias.grad])
    torch.testing.assert_close(in_bias, sa.in_proj_bias.grad, rtol=1e-10, atol=1e-10)
    for a, b in [(mine.attn.out, sa.out_proj), (mine.linear1, theirs.linear1), (mine.linear2, theirs.linear2),
                 (mine.norm1, theirs.norm1), (mine.norm2, theirs.norm2)]:
        torch.testing.assert_close(a.weight.grad, b.weight.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a.bias.grad, b.bias.grad, rtol=1e-10, atol=1e-10)
    assert in_proj.shape == (3 * d, d)


@pytest.mark.parametrize("norm_first", [False, True])
def test_the_comparison_can_fail(norm_first):
    # the other arrangement computes something else: the comparison above is not vacuous
    mine, theirs = _pair(norm_first)
    other = EncoderLayer(12, 3, 20, norm="post" if norm_first else "pre").double().copy_from(theirs)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    assert not torch.allclose(other(x), theirs(x), atol=1e-3)
    assert torch.allclose(mine(x), theirs(x), atol=1e-10)


def test_float32_layers_agree_in_train_mode():
    theirs = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True, norm_first=True)
    mine = EncoderLayer(16, 2, 32, norm="pre").copy_from(theirs)
    x = torch.randn(3, 6, 16)
    torch.testing.assert_close(mine(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_attention_matches_torch_sdpa_and_scale_switch():
    q, k, v = (torch.randn(2, 3, 5, 8, dtype=torch.float64) for _ in range(3))
    out, weights = attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))
    unscaled, _ = attention(q, k, v, scale=False)
    torch.testing.assert_close(unscaled, F.scaled_dot_product_attention(q, k, v, scale=1.0))
    assert not torch.allclose(unscaled, out)


def test_multi_head_attention_matches_torch():
    theirs = nn.MultiheadAttention(8, 2, batch_first=True).double()
    mine = MultiHeadAttention(8, 2).double()
    with torch.no_grad():
        for i, layer in enumerate((mine.query, mine.key, mine.value)):
            layer.weight.copy_(theirs.in_proj_weight[8 * i:8 * (i + 1)])
            layer.bias.copy_(0.1 * torch.randn(8))
            theirs.in_proj_bias[8 * i:8 * (i + 1)] = layer.bias
        mine.out.weight.copy_(theirs.out_proj.weight)
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    out, weights = theirs(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(mine(x), out)
    torch.testing.assert_close(mine.weights, weights)


def test_softmax_jacobian_is_autograd_jacobian_and_vanishes_when_saturated():
    s = torch.randn(6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, -1), s)
    torch.testing.assert_close(softmax_jacobian(torch.softmax(s, -1)), jac)
    saturated = torch.softmax(torch.tensor([40.0, 0.0, 0.0], dtype=torch.float64), -1)
    assert softmax_jacobian(saturated).abs().max() < 1e-15


@pytest.mark.parametrize("fused", [False, True])
def test_layer_norm_matches_torch(fused):
    mine, theirs = LayerNorm(7, fused=fused).double(), nn.LayerNorm(7).double()
    with torch.no_grad():
        theirs.weight.add_(torch.randn(7, dtype=torch.float64))
        mine.weight.copy_(theirs.weight)
    x = torch.randn(4, 3, 7, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(x)
    out_a, out_b = mine(xa), theirs(xb)
    torch.testing.assert_close(out_a, out_b)
    (out_a * g).sum().backward()
    (out_b * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(mine.weight.grad, theirs.weight.grad)


def test_encoder_layers_are_fresh_and_pre_ln_has_a_final_norm():
    post, pre = Encoder(5, 6, layers=3, norm="post"), Encoder(5, 6, layers=3, norm="pre")
    w = [layer.attn.query.weight for layer in post.layers]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert isinstance(pre.final_norm, LayerNorm) and isinstance(post.final_norm, nn.Identity)
    tokens = torch.randint(5, (2, 6))
    assert post(tokens).shape == (2, 6, 5)
    # Post-LN's output is layer-normalised already: mean 0, variance 1 per position
    h = post.features(tokens)
    torch.testing.assert_close(h.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(h.var(-1, unbiased=False), torch.ones(2, 6), atol=1e-3, rtol=0)


def test_rezero_starts_as_the_identity():
    layer = EncoderLayer(8, 2, 16, norm="rezero")
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(x), x)
    assert layer.gate.item() == 0


def test_deepnorm_constants_and_initialisation():
    alpha, beta = deepnorm_constants(8)
    assert alpha == pytest.approx(16 ** 0.25) and beta == pytest.approx(64 ** -0.25)
    # Wang et al.'s initialisation: xavier_normal_ with gain beta on value, out and the MLP, gain 1 on
    # query and key: the standard deviation of each matrix against gain * sqrt(2 / (fan_in + fan_out))
    torch.manual_seed(0)
    d, d_ff = 64, 256
    layer = EncoderLayer(d, 4, d_ff, residual_scale=alpha, branch_gain=beta)
    expected = {"query": 1.0, "key": 1.0, "value": beta, "out": beta, "linear1": beta, "linear2": beta}
    mats = {"query": layer.attn.query, "key": layer.attn.key, "value": layer.attn.value, "out": layer.attn.out,
            "linear1": layer.linear1, "linear2": layer.linear2}
    for name, gain in expected.items():
        w = mats[name].weight
        target = gain * math.sqrt(2 / sum(w.shape))
        assert w.std().item() == pytest.approx(target, rel=0.05), name
    # the default (branch_gain=None) keeps PyTorch's initialisation: a different scale for linear2
    plain = EncoderLayer(d, 4, d_ff)
    assert plain.linear2.weight.std().item() == pytest.approx(1 / math.sqrt(3 * d_ff), rel=0.05)
    deep = Encoder(4, 5, layers=8, deepnorm=True)
    assert deep.layers[0].residual_scale == pytest.approx(alpha)
    assert deep.layers[0].attn.value.weight.std().item() == pytest.approx(beta * math.sqrt(2 / 64), rel=0.2)


def test_deepnorm_forward_is_ln_of_alpha_x_plus_branch():
    torch.manual_seed(1)
    layer = EncoderLayer(8, 2, 16, residual_scale=1.7, branch_gain=0.5).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    h = F.layer_norm(1.7 * x + layer.attn(x), (8,), layer.norm1.weight, layer.norm1.bias)
    expected = F.layer_norm(1.7 * h + layer.mlp(h), (8,), layer.norm2.weight, layer.norm2.bias)
    torch.testing.assert_close(layer(x), expected)
    # with the branches switched off, LN(alpha x) = LN(x) (up to the eps of the variance): alpha matters
    # only beside a branch
    with torch.no_grad():
        for m in (layer.attn.value, layer.attn.out, layer.linear1, layer.linear2):
            m.weight.zero_()
            m.bias.zero_()
    torch.testing.assert_close(layer(x), F.layer_norm(F.layer_norm(x, (8,)), (8,)), atol=1e-4, rtol=0)


def test_sequence_tasks():
    g = torch.Generator().manual_seed(0)
    x, y = sequence_task("reverse", 3, 5, 7, generator=g)
    assert torch.equal(y, x.flip(1)) and x.max() < 7
    x, y = sequence_task("sort", 3, 5, 7, generator=g)
    assert torch.equal(y, torch.sort(x, 1).values)
    x, y = sequence_task("copy", 3, 5, 7, generator=g)
    assert torch.equal(x, y)


def test_mean_cosine():
    same = torch.ones(2, 4, 3)
    assert mean_cosine(same) == pytest.approx(1.0)
    eye = torch.eye(4).expand(2, 4, 4)
    assert mean_cosine(eye) == pytest.approx(0.0)


def test_warmup_linear():
    assert [warmup_linear(k, 1.0, 4) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_linear(0, 0.1, 0) == 0.1
    for bad in (0.0, -1e-3):
        with pytest.raises(ValueError, match="lr"):
            warmup_linear(0, bad, 4)


def test_training_is_seeded_and_learns():
    a = final_error(0, norm="pre", steps=30, layers=1, lr=3e-3)
    b = final_error(0, norm="pre", steps=30, layers=1, lr=3e-3)
    assert a == b
    model, history, _ = train_task(0, norm="pre", steps=30, layers=1, lr=3e-3)
    assert history.steps == 30 and history.train_loss[-1] < history.train_loss[0]
    assert history.logs["lr"][0] == 3e-3


@pytest.mark.parametrize("bad, error", [
    (dict(norm="middle"), ValueError),
    (dict(d_model=10, heads=3), ValueError),
    (dict(heads=2.0), TypeError),
    (dict(norm="pre", deepnorm=True), ValueError),
])
def test_clear_errors(bad, error):
    with pytest.raises(error):
        Encoder(5, 6, **bad)


def test_layer_errors():
    with pytest.raises(ValueError, match="residual_scale"):
        EncoderLayer(8, 2, 16, norm="pre", residual_scale=2.0)
    with pytest.raises(ValueError, match="task"):
        sequence_task("shuffle", 2, 3, 4)
    assert math.isfinite(deepnorm_constants(1)[0])


def test_a_model_measured_with_a_recorder_is_freed_once_dropped():
    # the attention weights kept for inspection are detached: were they part of the last pass's graph,
    # the Recorder's gradient hooks on that graph would hold the model in a cycle the collector
    # cannot see through, and every model measured this way would stay in memory
    from deepgrad.diagnostics import Recorder

    model = Encoder(10, 10, d_model=8, heads=2, d_ff=16, layers=2, norm="post")
    x, y = sequence_task("reverse", 4, 10, 10, generator=torch.Generator().manual_seed(0))
    with Recorder(model, EncoderLayer):
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    weights = model.layers[0].attn.weights
    assert weights.shape == (4, 2, 10, 10) and not weights.requires_grad
    alive = weakref.ref(model)
    del model, weights
    gc.collect()
    assert alive() is None
