"""transformers ResNet / ViT backbones: feature size from the config, and Auto* loading after save."""

import pytest
import torch
from transformers import AutoModelForImageClassification

from hfssl.vision.backbones import BackboneArgs, build_backbone, feature_dim, features, input_size


@pytest.mark.parametrize("args, size", [
    (BackboneArgs(backbone="resnet", preset="tiny"), 32),
    (BackboneArgs(backbone="resnet", preset="tiny", small_image_stem=False), 32),
    (BackboneArgs(backbone="vit", preset="test"), 16),
    (BackboneArgs(backbone="vit", preset="test", vit_pooling="mean"), 16),
])
def test_feature_dim_is_the_output_size(args, size):
    torch.manual_seed(0)
    model = build_backbone(args, size).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        f = features(model, x)
    assert f.shape == (2, feature_dim(model))
    if args.backbone == "resnet":
        assert feature_dim(model) == 128  # tiny preset's last hidden size
    else:
        assert feature_dim(model) == 32
        hidden = model(pixel_values=x).last_hidden_state
        ref = hidden[:, 1:].mean(1) if args.vit_pooling == "mean" else hidden[:, 0]
        torch.testing.assert_close(f, ref)


def test_resnet_bottleneck_feature_dim_from_config():
    from transformers import ResNetConfig, ResNetModel
    model = ResNetModel(ResNetConfig(layer_type="bottleneck", hidden_sizes=[8, 16, 24], depths=[1, 1, 1],
                                     embedding_size=8)).eval()
    with torch.no_grad():
        assert features(model, torch.randn(1, 3, 32, 32)).shape == (1, 24) and feature_dim(model) == 24


def test_small_image_resnet_upsamples_so_the_stem_keeps_the_resolution():
    small = BackboneArgs(preset="tiny")
    assert input_size(small, 32) == 128
    assert input_size(BackboneArgs(preset="tiny", small_image_stem=False), 32) == 32
    assert input_size(small, 96) == 96
    assert input_size(BackboneArgs(backbone="vit", preset="test"), 32) == 32
    model = build_backbone(small, 32).eval()
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = output.shape

    model.embedder.register_forward_hook(hook)
    with torch.no_grad():
        features(model, torch.randn(1, 3, 32, 32))
    assert seen["shape"][-2:] == (32, 32)  # 128 px through the stride-4 stem = the original 32 x 32


def test_resnet_features_channels_last_match_the_plain_call():
    """features() feeds the ResNet channels-last (faster convolutions); values and gradients must be those
    of the plain transformers call on the usual channels-first tensor, up to float rounding."""
    torch.manual_seed(0)
    model = build_backbone(BackboneArgs(preset="tiny", small_image_stem=False), 16).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    seen = {}
    model.embedder.register_forward_hook(lambda m, i, o: seen.update(channels_last=i[0].is_contiguous(
        memory_format=torch.channels_last) and not i[0].is_contiguous()))
    ours = features(model, x)
    assert seen["channels_last"]
    grad_ours = torch.autograd.grad(ours.square().sum(), model.embedder.embedder.convolution.weight)[0]
    ref = model(pixel_values=x.contiguous()).pooler_output.flatten(1)
    assert not seen["channels_last"]
    grad_ref = torch.autograd.grad(ref.square().sum(), model.embedder.embedder.convolution.weight)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-8, atol=1e-10)


def test_bad_args():
    with pytest.raises(ValueError):
        BackboneArgs(backbone="convnext")
    with pytest.raises(ValueError):
        BackboneArgs(backbone="vit", preset="resnet18")
    with pytest.raises(ValueError):
        build_backbone(BackboneArgs(backbone="vit", preset="test"), 18)


@pytest.mark.parametrize("args, size", [(BackboneArgs(preset="tiny"), 32),
                                        (BackboneArgs(backbone="vit", preset="test"), 16)])
def test_saved_backbone_loads_for_image_classification(tmp_path, args, size):
    torch.manual_seed(0)
    model = build_backbone(args, size)
    model.save_pretrained(tmp_path)
    clf, info = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=10, output_loading_info=True)
    assert not info["unexpected_keys"]
    assert info["missing_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"])
    base = clf.resnet if args.backbone == "resnet" else clf.vit
    loaded = base.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(loaded[name], value), name
    expected = input_size(args, size) if input_size(args, size) != size else None
    assert clf.config.hfssl_upsample_to == expected
    x = torch.randn(2, 3, size, size)
    assert clf.eval()(pixel_values=x).logits.shape == (2, 10)
