"""Classic saliency methods against reference implementations, and their properties."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from captum.attr import GuidedBackprop
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite
from zennit.rules import AlphaBeta, Norm, Pass
from zennit.types import Activation, AvgPool, Convolution, Linear

from facesal_fast import ops
from facesal_fast.benchmark.cis_end_to_end import tiny_net
from facesal_fast.methods import (
    METHOD_NAMES,
    RelevanceNotConservedError,
    check_conservation,
    explain,
    gradcam,
    gradcam_plus_plus,
    guided_backprop,
    guided_gradient,
    lrp,
    lrp_relevance,
    occlusion,
    saliency_difference,
    scorecam,
    skin_colour,
)
from facesal_fast.methods.occlusion import grid_centers, input_occlusion
from facesal_fast.ops import occlude as occlude_module

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def small_net(seed: int = 0, classes: int = 4) -> nn.Sequential:
    net = tiny_net(seed, classes, pool=4)
    net[1].weight.data.uniform_(0.5, 1.5)
    return net


class FunctionalNet(nn.Module):
    """The same weights as ``small_net`` with functional and in-place ReLUs."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        x = F.relu(n[1](n[0](x)), inplace=True)
        x = n[4](n[3](x)).relu_()
        return n[8](n[7](n[6](torch.relu(x))))


@pytest.fixture(scope="module")
def x64():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def image64():
    return (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- guided backprop


def test_guided_gradient_matches_captum(x64):
    net = small_net()
    ours = guided_gradient(net, x64, 2)
    ref = GuidedBackprop(net).attribute(x64.clone().requires_grad_(True), target=2)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_guided_gradient_catches_functional_and_inplace_relus(x64):
    net = small_net()
    ref = guided_gradient(net, x64, 1)
    functional = guided_gradient(FunctionalNet(net), x64, 1)
    torch.testing.assert_close(functional, ref, rtol=1e-5, atol=1e-7)
    # the plain gradient differs, so the guided rule really ran at the functional ReLUs
    x = x64.clone().requires_grad_(True)
    FunctionalNet(net)(x)[0, 1].backward()
    assert not torch.allclose(x.grad, ref)


def test_guided_backprop_of_positive_weights_is_non_negative(x64):
    net = small_net()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    grad = guided_gradient(net, x64, 0)
    assert grad.abs().max() > 0 and bool((grad >= 0).all())


def test_guided_backprop_map_and_saliency_difference(x64):
    net = small_net()
    gy, gz = guided_gradient(net, x64, 1).clamp(min=0), guided_gradient(net, x64, 3).clamp(min=0)
    gb = guided_backprop(net, x64, 1)
    assert gb.shape == (64, 64) and gb.dtype == np.float32
    np.testing.assert_allclose(gb, gy[0].amax(0).numpy())
    diff = saliency_difference(net, x64, 1, 3)
    np.testing.assert_allclose(diff, (gy - gz).clamp(min=0)[0].amax(0).numpy())
    assert (diff >= 0).all() and diff.max() > 0
    assert saliency_difference(net, x64, 1, 1).max() == 0


def test_guided_backprop_restores_training_mode_and_checks_arguments(x64):
    net = small_net().train()
    guided_backprop(net, x64, 0)
    assert net.training
    with pytest.raises(ValueError, match="1 x C x H x W"):
        guided_backprop(net, x64[0], 0)
    with pytest.raises(ValueError, match="out of range"):
        guided_backprop(net, x64, 9)


# ----------------------------------------------------------------------------- LRP


def zennit_reference(net, x, target):
    """zennit's own alpha-beta (2, 1); every neuron of this net has contributions of both
    signs (non-negative pixels), where it and SignSplit coincide."""
    rule = AlphaBeta(2.0, 1.0, zero_params="bias")
    composite = LayerMapComposite(
        layer_map=[(Activation, Pass()), (AvgPool, Norm()), (Convolution, rule), (Linear, rule)],
        canonizers=[SequentialMergeBatchNorm()],
    )
    with Gradient(model=net, composite=composite) as attributor:
        out, relevance = attributor(x, lambda o: o * F.one_hot(torch.tensor([target]), o.shape[1]))
    return relevance[0].numpy()


@pytest.mark.parametrize("rule", ["epsilon", "alpha-beta"])
def test_lrp_matches_zennit_and_conserves_relevance(x64, rule):
    net, x64 = small_net(), x64.abs()
    result = lrp_relevance(net, x64, 2, rule)
    if rule == "alpha-beta":  # epsilon: the textbook comparison below
        np.testing.assert_allclose(result.relevance, zennit_reference(net, x64, 2), rtol=1e-3, atol=1e-5)
    logit = float(net(x64)[0, 2])
    assert result.output_total == pytest.approx(logit, rel=1e-6)
    assert result.input_total == pytest.approx(logit, rel=1e-3)
    assert [layer.name for layer in result.layers] == ["8", "6", "4", "0"]  # linear, average pool, convolutions
    assert check_conservation(result, rtol=1e-3) < 1e-3
    np.testing.assert_allclose(lrp(net, x64, 2, rule), result.relevance.sum(0), rtol=1e-6)


def numpy_back(W, inp, R, rule, alpha=2.0, beta=1.0):
    """One textbook LRP step through ``W`` (no bias): the paper's eq. (2) (``"epsilon"``, z+ at
    neurons whose contributions cancel) or eq. (3), with the module's completions for
    one-signed neurons (``z_ij / z_j``) and neurons without contributions
    (``w_ij^2 / sum_i w_ij^2``); ``"z+"`` is alpha=1, beta=0."""
    z = W * inp[None, :]  # z_ij as [j, i]
    s = z.sum(1)
    if rule != "alpha-beta":  # epsilon where contributions do not cancel (1 %), z+ elsewhere
        alpha, beta = 1.0, 0.0
    zp, zn = np.clip(z, 0, None), np.clip(z, None, 0)
    p, n = zp.sum(1), zn.sum(1)
    out = np.zeros_like(inp)
    for j in range(len(R)):
        if rule == "epsilon" and abs(s[j]) >= 0.01 * (p[j] - n[j]):
            out += z[j] / (s[j] + 1e-6 * (1 if s[j] >= 0 else -1)) * R[j]
        elif p[j] > 0 and n[j] < 0:
            out += (alpha * zp[j] / p[j] - beta * zn[j] / n[j]) * R[j]
        elif p[j] > 0 or n[j] < 0:
            out += z[j] / s[j] * R[j]
        else:
            out += W[j] ** 2 / (W[j] ** 2).sum() * R[j]
    return out


def numpy_lrp(W1, W2, x, target, rule):
    """Textbook LRP for Linear-ReLU-Linear without biases (z+ at the input layer for epsilon)."""
    a = np.maximum(W1 @ x, 0)
    out = W2 @ a
    R = np.zeros_like(out)
    R[target] = out[target]
    return numpy_back(W1, x, numpy_back(W2, a, R, rule), "z+" if rule == "epsilon" else rule)


@pytest.mark.parametrize("rule", ["epsilon", "alpha-beta"])
def test_lrp_matches_the_paper_equations(rule):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10, bias=False), nn.ReLU(), nn.Linear(10, 3, bias=False)).double()
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    ours = lrp_relevance(net, x, 1, rule).relevance.reshape(-1)
    ref = numpy_lrp(net[1].weight.detach().numpy(), net[3].weight.detach().numpy(), x.numpy().reshape(-1), 1, rule)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


def test_lrp_conservation_check_catches_a_leak(x64):
    net = small_net()
    result = lrp_relevance(net, x64, 0, "epsilon")
    leaky = type(result)(result.relevance, result.output_total, result.input_total * 1.5, result.layers)
    with pytest.raises(RelevanceNotConservedError, match="whole model"):
        check_conservation(leaky, rtol=1e-2)


def test_lrp_resnet_conserves_relevance_through_residual_sums():
    torch.manual_seed(4)
    net = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    result = lrp_relevance(net, x, 1, "epsilon")
    assert len(result.layers) == 21 + 8 + 1  # 20 convolutions, the linear layer, 8 residual sums, the average pool
    assert check_conservation(result, rtol=1e-2) < 1e-2


# ----------------------------------------------------------------------------- CAMs


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(5)
    return torchvision.models.resnet18(num_classes=3).eval()


def reference_gradcam(net, layer, x, target, plus_plus=False):
    """GradCAM / GradCAM++ written out from their papers (no pytorch-grad-cam)."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(a=o))
    x = x.clone().requires_grad_(True)
    out = net(x)
    handle.remove()
    (grad,) = torch.autograd.grad(out[0, target], store["a"])
    A, g = store["a"][0].detach().double(), grad[0].double()
    if plus_plus:
        g2, g3 = g**2, g**3
        alpha = g2 / (2 * g2 + A.sum((1, 2), keepdim=True) * g3 + 1e-6)  # pytorch-grad-cam's guard
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * torch.relu(g)).sum((1, 2))
    else:
        weights = g.mean((1, 2))
    cam = torch.relu((weights[:, None, None] * A).sum(0))
    cam = cam - cam.min()
    cam = cam / (cam.max() + 1e-7)
    return F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()


@pytest.mark.parametrize("plus_plus", [False, True])
def test_gradcam_matches_the_equations(resnet, x64, plus_plus):
    method = gradcam_plus_plus if plus_plus else gradcam
    ours = method(resnet, x64, 1, resnet.layer4[-1])
    ref = reference_gradcam(resnet, resnet.layer4[-1], x64, 1, plus_plus)
    assert ours.shape == (64, 64) and ours.max() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_scorecam_matches_pytorch_grad_cam(x64):
    net = small_net()
    ours = scorecam(net, x64, 2, batch_size=3)  # default layer: the last Conv2d, net[4]
    with ScoreCAM(model=net, target_layers=[net[4]]) as cam:
        ref = cam(input_tensor=x64, targets=[ClassifierOutputTarget(2)])[0]
    assert ours.max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_cam_layer_errors(resnet, x64):
    with pytest.raises(ValueError, match="no submodule"):
        gradcam(resnet, x64, 0, "layer9")
    with pytest.raises(ValueError, match="no Conv2d"):
        gradcam(nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2)), x64, 0)


# ----------------------------------------------------------------------------- occlusion


def test_occlusion_matches_the_per_patch_loop(image64):
    net = small_net()
    patch, step, mean, std = 8, 8, 0.5, 0.25
    s = occlusion(net, image64, 3, patch=patch, step=step, mean=mean, std=std, confidence="logit")
    ref_sum, ref_count = np.zeros((64, 64)), np.zeros((64, 64))
    with torch.no_grad():
        base = net(torch.from_numpy((image64 / 255.0 - mean) / std).permute(2, 0, 1)[None].float())[0, 3]
        for cy in range(step // 2, 64, step):
            for cx in range(step // 2, 64, step):
                occluded = image64.copy()
                occluded[max(0, cy - 3) : cy + 5, max(0, cx - 3) : cx + 5] = 0
                t = torch.from_numpy((occluded / 255.0 - mean) / std).permute(2, 0, 1)[None].float()
                drop = float(base - net(t)[0, 3])
                ref_sum[max(0, cy - 3) : cy + 5, max(0, cx - 3) : cx + 5] += drop
                ref_count[max(0, cy - 3) : cy + 5, max(0, cx - 3) : cx + 5] += 1
    np.testing.assert_allclose(s, ref_sum / np.maximum(ref_count, 1), atol=1e-5)
    assert np.abs(s).max() > 0


def test_occlusion_uses_one_batched_occlude_call(image64, monkeypatch):
    calls = []
    real = ops.occlude_batch

    def counted(img, centers, *a, **k):
        calls.append(len(centers))
        return real(img, centers, *a, **k)

    monkeypatch.setattr(ops, "occlude_batch", counted)
    monkeypatch.setattr(occlude_module, "occlude_batch", counted)  # ops.unoccluded calls it there
    occlusion(small_net(), image64, 0, patch=8, step=4)
    assert sorted(calls) == [1, 256]  # the unoccluded input, then all 16 x 16 centres at once


def test_skin_colour_finds_skin_not_background():
    image = np.zeros((60, 60, 3), np.uint8)
    image[:] = (20, 60, 200)  # blue background
    image[10:50, 15:45] = (205, 150, 125)  # a skin-toned face
    np.testing.assert_allclose(skin_colour(image, (15, 10, 45, 50)), (205, 150, 125))
    np.testing.assert_allclose(skin_colour(image), (205, 150, 125))


def test_occlusion_is_one_entry_point_for_a_scorer_and_a_module(image64):
    """Issue 28: occlusion(scorer, ...) and occlusion(module, ...) are the one image-space occlusion;
    the registry runs it, and the deprecated input_occlusion gives the same map, warned."""
    from facesal_fast.methods import registry
    from facesal_fast.scoring import Scorer

    net = small_net(classes=3)
    scorer = Scorer.from_torch(net, 64, mean=0.5, std=0.25, backend="torch")
    input_image, _ = scorer.prepare(image64)
    by_module = occlusion(net, input_image, 1, step=8, mean=0.5, std=0.25)
    by_scorer = occlusion(scorer, input_image, 1, step=8)
    np.testing.assert_allclose(by_scorer, by_module, atol=1e-6)
    assert np.abs(by_scorer).max() > 0
    model_input = registry.ModelInput.from_scorer(scorer, input_image)
    np.testing.assert_array_equal(registry.compute("occlusion", model_input, 1, step=8), by_scorer)
    with pytest.warns(DeprecationWarning, match="input_occlusion is now occlusion"):
        old = input_occlusion(scorer, input_image, 1, stride=8)
    np.testing.assert_array_equal(old, by_scorer)


def test_occlusion_step_and_its_deprecated_name_stride(image64):
    """Issue 28: the grid step of image-space occlusion is step= (stride is the CIS's vertex
    stride); stride= (and model=) still work for one release, warned, with the same map."""
    net, norm = small_net(), dict(mean=0.5, std=0.25)
    new = occlusion(net, image64, 1, step=8, **norm)
    assert not np.array_equal(new, occlusion(net, image64, 1, **norm))  # the default step is 4
    with pytest.warns(DeprecationWarning, match="stride= is now step="):
        np.testing.assert_array_equal(occlusion(net, image64, 1, stride=8, **norm), new)
    with pytest.warns(DeprecationWarning, match="model= is now scorer_or_model="):
        np.testing.assert_array_equal(occlusion(model=net, image=image64, target=1, step=8, **norm), new)
    with pytest.raises(TypeError, match="not both"):
        occlusion(net, image64, 1, step=8, stride=8)
    with pytest.warns(DeprecationWarning, match="stride= is now step="):
        by_old_option = explain("occlusion", net, image64, 1, stride=8, **norm).image_map
    np.testing.assert_array_equal(by_old_option, explain("occlusion", net, image64, 1, step=8, **norm).image_map)
    np.testing.assert_array_equal(grid_centers((9, 9), 4), [[2, 2], [6, 2], [2, 6], [6, 6]])
    with pytest.warns(DeprecationWarning, match="stride= is now step="):
        np.testing.assert_array_equal(grid_centers((9, 9), stride=4), [[2, 2], [6, 2], [2, 6], [6, 6]])
    with pytest.raises(ValueError, match="confidence"):
        occlusion(net, image64, 1, confidence="probability")


def test_occlusion_of_a_grey_module_takes_a_colour_fill(image64):
    """A colour fill (occlusion-skin's) is made grey for a one-channel input, for a torch
    module as for a scorer (a module refused it before)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    )
    grey, colour = image64[..., :1], np.array([200.0, 150.0, 100.0])
    luma = float(np.dot(colour, [0.299, 0.587, 0.114]))
    np.testing.assert_array_equal(occlusion(net.eval(), grey, 1, fill=colour), occlusion(net, grey, 1, fill=luma))


def test_method_names_is_the_tuple_and_methods_its_deprecated_alias():
    """Issue 28: fs.methods.METHOD_NAMES is the tuple of names (registry.METHODS is the mapping of
    methods); fs.methods.METHODS still reads it for one release, warned."""
    import importlib
    from collections.abc import Mapping

    import facesal_fast as fs
    from facesal_fast.methods import registry

    assert isinstance(fs.methods.METHOD_NAMES, tuple) and isinstance(registry.METHODS, Mapping)
    with pytest.warns(DeprecationWarning, match="facesal_fast.methods.METHODS is now METHOD_NAMES"):
        assert fs.methods.METHODS is fs.methods.METHOD_NAMES
    explain_module = importlib.import_module("facesal_fast.methods.explain")
    with pytest.warns(DeprecationWarning, match="explain.METHODS is now METHOD_NAMES"):
        assert explain_module.METHODS is fs.methods.METHOD_NAMES
    with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
        fs.methods.NOPE  # noqa: B018


# ----------------------------------------------------------------------------- explain


def test_explain_runs_every_method_and_canonicalises(image64):
    from facesal_fast.align import AlignedFace

    net = small_net(classes=3)
    ys, xs = np.mgrid[0:64:4, 0:64:4]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    face = AlignedFace.from_arrays(image64, pts, pts, (64, 64), mode="points", face_box=(0, 0, 63, 63))
    for name in METHOD_NAMES:
        result = explain(name, net, image64, 1, face, other=2, mean=0.5, std=0.25, step=8)
        assert result.image_map.shape == (64, 64) and np.isfinite(result.image_map).all()
        assert result.canonical_map.shape == (64, 64)
        np.testing.assert_allclose(result.canonical_map[ys, xs], result.image_map[ys, xs], atol=1e-5)
    with pytest.raises(ValueError, match="unknown method"):
        explain("gradient", net, image64, 0)
    with pytest.raises(ValueError, match="other="):
        explain("saliency-difference", net, image64, 0)


def test_explain_with_a_scorer_matches_the_module(image64):
    from facesal_fast.scoring import Scorer

    net = small_net(classes=3)
    scorer = Scorer.from_torch(net, 64, mean=0.5, std=0.25, backend="torch")
    for name in ("guided-backprop", "lrp-epsilon", "occlusion"):
        a = explain(name, net, image64, 1, mean=0.5, std=0.25, step=8)
        b = explain(name, scorer, image64, 1, step=8)
        np.testing.assert_allclose(a.image_map, b.image_map, atol=1e-6)
        assert b.canonical_map is None


# ----------------------------------------------------------------------------- registry


def test_registry_names_aliases_and_options():
    from facesal_fast.methods import registry

    assert METHOD_NAMES == tuple(m for m in registry.names(needing=("other",)) if registry.METHODS[m].run is not None)
    assert "saliency-difference" not in registry.names()  # needs other=
    for alias, name in {"gb": "guided-backprop", "gradcampp": "gradcam++", "lrp": "lrp-epsilon"}.items():
        assert registry.ALIASES[alias] == name and registry.resolve(alias) is registry.METHODS[name]
    assert {"output", "other", "patch", "step", "fill", "target_layer", "lrp_rtol"} == registry.OPTIONS
    model_input = registry.ModelInput(np.zeros((8, 8, 3), np.uint8), small_net())
    with pytest.raises(ValueError, match="unknown option"):
        registry.compute("gradcam", model_input, 0, ouptut="probability")
    with pytest.raises(ValueError, match="canonical-face map"):
        registry.compute("cms", model_input, 0)
    with pytest.raises(ValueError, match="unknown method 'nope'.*aliases: gradcampp = gradcam\\+\\+"):
        registry.resolve("nope")


def test_explain_forwards_per_method_options(image64):
    """Issue 18: explain passes Guided Backprop's output= (and every other option) through the registry."""
    net = small_net(classes=3)
    x = torch.from_numpy(ops.unoccluded(image64, 0.5, 0.25))
    norm = dict(mean=0.5, std=0.25)
    probability = explain("gb", net, image64, 1, output="probability", **norm)
    assert probability.method == "guided-backprop"  # the canonical name, whatever alias was asked for
    np.testing.assert_allclose(probability.image_map, guided_backprop(net, x, 1, "probability"), atol=1e-6)
    logit = explain("guided-backprop", net, image64, 1, **norm)  # the default stays the logit
    np.testing.assert_allclose(logit.image_map, guided_backprop(net, x, 1), atol=1e-6)
    assert not np.allclose(probability.image_map, logit.image_map)
    grey = explain("occlusion", net, image64, 1, fill="mean", step=8, **norm).image_map
    black = explain("occlusion", net, image64, 1, step=8, **norm).image_map
    np.testing.assert_allclose(grey, occlusion(net, image64, 1, step=8, fill="mean", **norm), atol=1e-6)
    assert not np.allclose(grey, black)
