"""SDPA window attention: the same function, gradients and weights as MONAI's WindowAttention."""
import copy

import pytest
import torch
from monai.networks.nets import SwinUNETR

from swinunetr_lib.models.window_attention import (
    MASK_ALIGNMENT,
    SDPAWindowAttention,
    aligned_bias,
    use_sdpa_window_attention,
)
from swinunetr_lib.pretrain.model import SSLModel


def _forward_backward(model, x):
    out = model(x)
    loss = sum(v.double().pow(2).mean() for v in out.values())
    loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_sdpa_model_matches_monai_attention_forward_and_backward():
    # 64^3 with window 7: stages 0-2 use shifted windows (the region-mask path), stage 3 a clipped window.
    torch.manual_seed(0)
    reference = SSLModel(feature_size=12).double()
    fused = copy.deepcopy(reference)
    assert use_sdpa_window_attention(fused) == 8
    assert sum(isinstance(m, SDPAWindowAttention) for m in fused.modules()) == 8
    x = torch.rand(2, 1, 64, 64, 64, dtype=torch.float64)
    out_ref, grad_ref = _forward_backward(reference, x)
    out_new, grad_new = _forward_backward(fused, x)
    for key in out_ref:
        torch.testing.assert_close(out_new[key], out_ref[key], rtol=1e-10, atol=1e-12)
    assert grad_ref.keys() == grad_new.keys()
    bias_tables = [n for n in grad_ref if n.endswith("relative_position_bias_table")]
    assert len(bias_tables) == 8 and all(grad_ref[n].abs().max() > 0 for n in bias_tables)
    for name in grad_ref:
        scale = grad_ref[name].abs().max().item()
        assert (grad_new[name] - grad_ref[name]).abs().max().item() <= 1e-9 * max(scale, 1e-6), name


def test_sdpa_switch_keeps_state_dict_and_constructor_flag_is_the_same_model():
    torch.manual_seed(1)
    plain = SSLModel(feature_size=12)
    torch.manual_seed(1)
    flagged = SSLModel(feature_size=12, sdpa_attention=True)
    assert plain.state_dict().keys() == flagged.state_dict().keys()
    assert all(torch.equal(a, b)
               for a, b in zip(plain.state_dict().values(), flagged.state_dict().values(), strict=True))
    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12)
    keys = list(net.state_dict())
    assert use_sdpa_window_attention(net) == 8
    assert use_sdpa_window_attention(net) == 0  # already switched: nothing to do, no error
    assert list(net.state_dict()) == keys


def test_sdpa_under_cpu_bf16_autocast_is_close_to_monai():
    torch.manual_seed(2)
    reference = SSLModel(feature_size=12)
    fused = copy.deepcopy(reference)
    use_sdpa_window_attention(fused)
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = reference(x)["reconstruction"].float(), fused(x)["reconstruction"].float()
    assert (a - b).abs().max().item() < 0.05 * a.abs().max().item()


def test_aligned_bias_is_a_padded_view_with_the_same_values():
    bias = torch.randn(2, 3, 343, 343, requires_grad=True)
    out = aligned_bias(bias, torch.bfloat16)
    assert out.shape == bias.shape and out.dtype == torch.bfloat16
    assert out.stride(-1) == 1 and all(s % MASK_ALIGNMENT == 0 for s in out.stride()[:-1])
    torch.testing.assert_close(out.float(), bias.detach().to(torch.bfloat16).float())
    out.float().sum().backward()
    assert torch.equal(bias.grad, torch.ones_like(bias))


def test_switch_refuses_models_it_cannot_serve():
    with pytest.raises(ValueError, match="no MONAI WindowAttention"):
        use_sdpa_window_attention(torch.nn.Linear(2, 2))
    net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, attn_drop_rate=0.1)
    with pytest.raises(ValueError, match="attn_drop_rate=0"):
        use_sdpa_window_attention(net)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by ci/gpu_bench.sh)")
def test_cuda_memory_efficient_kernel_takes_the_bias_and_saves_memory():
    """Only the memory-efficient backend is allowed: it must accept the broadcast bias, return its
    gradient, match MONAI's attention, and need far less memory than the (B*nW, heads, N, N) matrices."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = torch.device("cuda")
    torch.manual_seed(3)
    reference = SSLModel(feature_size=12).to(device)
    fused = copy.deepcopy(reference)
    use_sdpa_window_attention(fused)
    x = torch.rand(4, 1, 64, 64, 64, device=device)
    results = []
    for model in (reference, fused):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]), torch.autocast("cuda", dtype=torch.bfloat16):
            out, grads = _forward_backward(model, x)
        torch.cuda.synchronize(device)
        results.append((out, grads, torch.cuda.max_memory_allocated(device) - base))
    (out_ref, grad_ref, peak_ref), (out_new, grad_new, peak_new) = results
    ref, new = out_ref["reconstruction"].float(), out_new["reconstruction"].float()
    assert (ref - new).abs().max().item() < 0.05 * ref.abs().max().item()
    table = "swinViT.layers1.0.blocks.1.attn.relative_position_bias_table"  # a shifted-window block
    cos = torch.nn.functional.cosine_similarity(grad_ref[table].flatten(), grad_new[table].flatten(), dim=0)
    assert cos.item() > 0.9, cos.item()
    assert peak_new < 0.7 * peak_ref, (peak_new / 2**20, peak_ref / 2**20)
