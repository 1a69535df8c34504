"""SSLModel: SwinUNETR-identical encoder keys, head shapes, export in the official model_swinvit.pt layout."""
import pytest
import torch
from monai.networks.nets import SwinUNETR

from swinunetr_lib.models.swin_unetr import load_encoder
from swinunetr_lib.pretrain.model import SSLModel, encoder_state_dict, export_encoder


class RecordingDict(dict):
    """A state_dict that remembers which keys were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def test_encoder_keys_and_shapes_equal_swinunetr():
    ssl = SSLModel(feature_size=12)
    ref = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    ours = {k: v.shape for k, v in ssl.state_dict().items() if k.startswith("swinViT.")}
    theirs = {k: v.shape for k, v in ref.state_dict().items() if k.startswith("swinViT.")}
    assert ours == theirs and len(ours) == 126


def test_forward_shapes_and_bad_input():
    torch.manual_seed(0)
    model = SSLModel(feature_size=12, depths=(1, 1, 1, 1))
    x = torch.rand(2, 1, 32, 32, 32)
    out = model(x)
    assert out["rotation"].shape == (2, 4)
    assert out["contrastive"].shape == (2, 512)
    assert out["reconstruction"].shape == x.shape
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.rand(1, 1, 32, 32, 40))


def test_heads_read_pooled_features_not_one_token():
    """Changing only one corner of the input's receptive field of token 0 is not all that matters:
    the heads see the global average of the last stage, so every region contributes."""
    torch.manual_seed(0)
    model = SSLModel(feature_size=12, depths=(1, 1, 1, 1)).eval()
    x = torch.rand(1, 1, 64, 64, 64)
    y = x.clone()
    y[..., 32:, 32:, 32:] = torch.rand(1, 1, 32, 32, 32)  # far from the first token's region
    with torch.no_grad():
        a, b = model(x)["rotation"], model(y)["rotation"]
    assert not torch.allclose(a, b)


def test_export_loads_into_swinunetr_with_every_tensor_matched(tmp_path):
    torch.manual_seed(1)
    ssl = SSLModel(feature_size=12)
    with torch.no_grad():  # make every tensor distinctive (LayerNorms start at 1/0 in both models)
        for p in ssl.swinViT.parameters():
            p.add_(torch.randn_like(p))
    path = export_encoder(ssl, tmp_path / "model_swinvit.pt")
    weights = torch.load(path, weights_only=True)
    assert set(weights) == {"state_dict"}
    sd = weights["state_dict"]
    assert "module.patch_embed.proj.weight" in sd and "module.layers1.0.blocks.0.mlp.fc1.weight" in sd
    assert all(k.startswith("module.") for k in sd)

    torch.manual_seed(2)
    net = SwinUNETR(in_channels=1, out_channels=14, feature_size=12)
    recorded = RecordingDict(sd)
    net.load_from({"state_dict": recorded})
    assert recorded.read == set(sd), f"exported but never read: {sorted(set(sd) - recorded.read)[:5]}"
    src = encoder_state_dict(ssl)
    dst = {k: v for k, v in net.state_dict().items() if k.startswith("swinViT.")}
    assert set(src) == set(dst)
    mismatched = [k for k in dst if not torch.equal(src[k], dst[k])]
    assert mismatched == []
    again = SwinUNETR(in_channels=1, out_channels=14, feature_size=12)
    assert load_encoder(again, path).loaded == len([k for k in src if "relative_position_index" not in k])
    assert all(torch.equal(v, src[k]) for k, v in again.state_dict().items() if k in src)


def test_heads_read_the_normalised_last_stage():
    torch.manual_seed(0)
    model = SSLModel(feature_size=12).eval()
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        out = model(x)
        last = model.swinViT(x, normalize=True)[-1]
        torch.testing.assert_close(out["rotation"], model.rotation_head(last.mean(dim=(2, 3, 4))))
        torch.testing.assert_close(out["reconstruction"], model.decoder(last))


def test_unet_decoder_is_swinunetrs_decoder_and_round_trips(tmp_path):
    from swinunetr_lib.pretrain.model import SWIN_UNETR_DECODER_BLOCKS, decoder_kind_of, load_ssl_model

    ssl = SSLModel(feature_size=12, decoder="unet")
    ref = SwinUNETR(in_channels=1, out_channels=1, feature_size=12)
    ours = {k[len("decoder."):]: v.shape for k, v in ssl.state_dict().items() if k.startswith("decoder.")}
    theirs = {k: v.shape for k, v in ref.state_dict().items() if k.split(".")[0] in SWIN_UNETR_DECODER_BLOCKS}
    assert ours == theirs and len(ours) == 33  # 11 blocks; InstanceNorm has no weights
    assert decoder_kind_of(ssl.state_dict()) == "unet"
    torch.save({"model": ssl.state_dict()}, tmp_path / "last.pt")
    back = load_ssl_model(tmp_path / "last.pt")
    assert back.decoder_kind == "unet"
    assert all(torch.equal(a, b) for a, b in zip(ssl.state_dict().values(), back.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="decoder kind must be 'upsample', 'transposed' or 'unet'"):
        SSLModel(feature_size=12, decoder="skip")


def test_unet_decoder_needs_64_to_decode_but_its_encoder_heads_run_at_32():
    ssl = SSLModel(feature_size=12, decoder="unet").eval()
    with torch.no_grad():
        assert ssl.rotation_logits(torch.rand(2, 1, 32, 32, 32)).shape == (2, 4)  # what the probe runs
        with pytest.raises(ValueError, match=r"decoder='unet'\) needs spatial sizes of at least 64"):
            ssl(torch.rand(1, 1, 32, 32, 32))


@pytest.mark.parametrize("kind", ["unet", "upsample"])
def test_only_the_unet_decoder_has_a_local_path_from_input_to_output(kind):
    """A voxel of the reconstruction depends mostly on the input around it through the skips (``unet``); from the
    last stage alone (``upsample``) it depends on the whole sub-volume, so inpainting is all it can learn from."""
    torch.manual_seed(0)
    ssl = SSLModel(feature_size=12, decoder=kind).eval()
    x = torch.rand(1, 1, 64, 64, 64, requires_grad=True)
    ssl(x)["reconstruction"][0, 0, 32, 32, 32].backward()
    g = x.grad.abs()[0, 0]
    near = float(g[30:35, 30:35, 30:35].sum() / g.sum())  # 125 of 262,144 voxels (0.05 %)
    assert (near > 0.2) if kind == "unet" else (near < 0.02), near
