"""FactSeg: parity with the official model, the checkpoint converter, CP fusion, the SOM loss and learning."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from segwise.cli import main
from segwise.config import load_config
from segwise.data.folder import find_samples, read_sample_image
from segwise.data.io import read_mask
from segwise.data.synthetic import make_synthetic_dataset
from segwise.data.transforms import normalize
from segwise.models.spec import load_model
from segwise.errors import CheckpointError, ConfigError, ModelError
from segwise.losses import build_loss
from segwise.metrics import compute_metrics, format_table
from segwise.models import create_model, input_stride
from segwise.convert.factseg import convert_official_state_dict, load_official_checkpoint, official_encoder_name
from segwise.models.factseg import collaborative_log_probs
from segwise.tasks.semantic.train import train
from tests.helpers import SHARED_DATASETS, quick_config, rule_tensor

PARITY = SHARED_DATASETS.parent / "reference" / "factseg_parity"
SMALL = {"fpn_channels": 16, "decoder_channels": 8}
pytestmark = pytest.mark.usefixtures("one_thread")

# Ours → official key prefixes (the inverse of the converter's table), to fake official checkpoints.
_TO_OFFICIAL = [("encoder.", "resencoder.resnet."), ("sr_decoder.", "fg_decoder."), ("fa_decoder.", "bi_decoder."),
                ("sr_head.", "fg_cls."), ("fa_head.", "bi_cls.")]


def _official_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for ours, theirs in _TO_OFFICIAL:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
        for branch, fpn in (("sr_fpn", "fgfpn"), ("fa_fpn", "bifpn")):
            for kind in ("inner", "layer"):
                if key.startswith(f"{branch}.{kind}_blocks."):
                    level, _, rest = key[len(f"{branch}.{kind}_blocks."):].split(".", 2)
                    key = f"{fpn}.fpn_{kind}{int(level) + 1}.{rest}"
        out[key] = value
    return out


def _rule_weights(keys: list) -> dict[str, torch.Tensor]:
    """The fixture's deterministic weight rule (README § 3), in float32 as it was applied."""
    return {name: rule_tensor(name, shape) for name, shape, _ in keys}


@pytest.mark.skipif(not (PARITY / "probs.npy").is_file(), reason="../shared/reference/factseg_parity is absent")
def test_parity_with_the_official_model_in_float64():
    """Tolerance: the fixture is the official float64 run rounded to float32, so our float64 outputs must round to
    the same float32 values (max rounding error 2.4e-7); we assert atol 1e-6 and the exact official loss."""
    keys = json.loads((PARITY / "state_dict_keys.json").read_text())
    official = _rule_weights(keys)
    checksums = json.loads((PARITY / "weight_checksums.json").read_text())
    assert all(hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16] == checksums[n]["sha256_16"]
               for n, t in official.items())
    state = convert_official_state_dict(official)
    assert official_encoder_name(state) == "resnet50"
    model = create_model("factseg", classes=16, encoder="resnet50")
    model.load_state_dict(state, strict=True)
    model = model.double().eval()
    x = torch.from_numpy(np.load(PARITY / "input.npy")).double()
    with torch.no_grad():
        sr, fa = model.branches(x)
        log_q = model(x)
    for name, ours in (("sr_logits", sr), ("fa_logits", fa), ("probs", log_q.exp())):
        reference = torch.from_numpy(np.load(PARITY / f"{name}.npy")).double()
        assert ours.shape == reference.shape
        assert (ours - reference).abs().max().item() < 1e-6, name
    assert torch.equal(log_q.exp().float(), torch.from_numpy(np.load(PARITY / "probs.npy")))
    target = torch.from_numpy(np.load(PARITY / "target.npy")).long()
    official_loss = json.loads((PARITY / "loss.json").read_text())["value"]
    ours = build_loss("som", 16, 255, som_ratio=0.1).losses["som"](log_q, target).item()
    assert ours == pytest.approx(official_loss, rel=1e-12)


def test_output_is_log_of_a_probability_distribution_at_odd_sizes():
    torch.manual_seed(0)
    model = create_model("factseg", classes=4, encoder="resnet18", **SMALL).eval()
    assert input_stride(model) == 32
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        log_q = model(x)
        sr, fa = model.branches(x)
    assert log_q.shape == (2, 4, 37, 53) and sr.shape == (2, 4, 37, 53) and fa.shape == (2, 1, 37, 53)
    q = log_q.exp()
    torch.testing.assert_close(q.sum(1), torch.ones(2, 37, 53))
    torch.testing.assert_close(log_q.softmax(1), q)  # what the engine's softmax sees is q itself
    b, s = fa.sigmoid(), sr.softmax(1)
    joint = torch.cat([(1 - b) * s[:, :1], b * s[:, 1:]], 1)
    torch.testing.assert_close(q, joint / joint.sum(1, keepdim=True))


def test_model_arguments_are_checked_and_local_encoder_weights_load(tmp_path: Path):
    torch.manual_seed(3)
    donor = create_model("factseg", classes=3, encoder="resnet18", **SMALL)
    torch.save(donor.encoder.state_dict(), tmp_path / "resnet18.pth")
    model = create_model("factseg", classes=3, encoder="resnet18", encoder_weights=str(tmp_path / "resnet18.pth"),
                         **SMALL)
    torch.testing.assert_close(model.encoder.conv1.weight, donor.encoder.conv1.weight)
    with pytest.raises(ModelError, match="classes >= 2"):
        create_model("factseg", classes=1, encoder="resnet18")
    with pytest.raises(ModelError, match="nope"):
        create_model("factseg", classes=3, encoder="nope")


def test_cp_fusion_and_som_loss_on_a_hand_computed_case():
    # s = 1/3 each, b = σ(log 3) = 3/4: q0 ∝ 1/4·1/3, q1 = q2 ∝ 3/4·1/3 → q = (1/7, 3/7, 3/7).
    sr = torch.zeros(1, 3, 1, 4)
    fa = torch.full((1, 1, 1, 4), math.log(3.0))
    log_q = collaborative_log_probs(sr, fa)
    torch.testing.assert_close(log_q.exp()[0, :, 0, 0], torch.tensor([1 / 7, 3 / 7, 3 / 7]))
    target = torch.tensor([[[0, 1, 255, 2]]])  # per-pixel losses: log 7, log 7/3, 0 (ignored), log 7/3
    hard, easy = math.log(7), math.log(7 / 3)
    expected = {0.25: hard, 0.5: (hard + easy) / 2, 1.0: (hard + 2 * easy) / 3}  # k = int(ratio·4); zeros dropped
    for ratio, value in expected.items():
        assert build_loss("som", 3, 255, som_ratio=ratio)(log_q, target).item() == pytest.approx(value, rel=1e-5)
    # Without mining, the joint CP loss is plain cross entropy on the output.
    assert build_loss("ce", 3, 255)(log_q, target).item() == pytest.approx(expected[1.0], rel=1e-5)


def test_som_trains_only_the_hardest_pixels_and_ignores_255():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, :2] = 255
    loss = build_loss("som", 4, 255, som_ratio=0.1)
    value = loss(logits, target)
    value.backward()
    per_pixel = torch.nn.functional.cross_entropy(logits.detach(), target, ignore_index=255, reduction="none")
    k = int(0.1 * per_pixel.numel())
    touched = logits.grad.abs().sum(1) > 0
    assert touched.sum().item() == k
    assert per_pixel[touched].min() >= per_pixel[~touched].max()
    assert not touched[0, :2].any()
    assert value.item() == pytest.approx(per_pixel.flatten().topk(k).values.mean().item(), rel=1e-5)
    # A larger ratio averages easier pixels in: the loss can only fall.
    values = [build_loss("som", 4, 255, som_ratio=r)(logits, target).item() for r in (0.05, 0.1, 0.5, 1.0)]
    assert values == sorted(values, reverse=True)
    assert build_loss("som", 4, 255)(logits, torch.full_like(target, 255)).item() == 0.0
    with pytest.raises(ConfigError, match="som_ratio"):
        build_loss("som", 4, 255, som_ratio=0.0)
    with pytest.raises(ConfigError, match="som_ratio"):
        load_config(None, ["loss.som_ratio=1.5"])


def test_converter_loads_wrapped_ddp_checkpoints_and_refuses_others(tmp_path: Path, capsys):
    torch.manual_seed(2)
    ours = create_model("factseg", classes=16, encoder="resnet18").eval()
    official = {f"module.{k}": v for k, v in _official_layout(ours.state_dict()).items()}
    path = tmp_path / "official.pth"
    torch.save({"model": official, "global_step": 60000}, path)
    assert main(["convert", "factseg", str(path), str(tmp_path / "converted")]) == 0
    model, spec = load_model(tmp_path / "converted")
    assert spec.name == "factseg" and spec.encoder == "resnet18" and spec.num_classes == 16
    assert spec.class_names[1] == "ship" and spec.palette[15] == [0, 100, 155] and spec.mean[0] == 123.675
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ours(x))
    assert "converted" in capsys.readouterr().out

    torch.save({"model": {"fgfpn.fpn_inner1.bias": torch.zeros(1)}}, tmp_path / "partial.pth")
    assert main(["convert", "factseg", str(tmp_path / "partial.pth"), str(tmp_path / "partial")]) == 2
    assert "lacks the FactSeg keys" in capsys.readouterr().err
    torch.save({"model": {"head.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not FactSeg keys"):
        load_official_checkpoint(tmp_path / "other.pth")
    torch.save({"model": {"bi_cls.bias": torch.zeros(1)}, "config": ModelError("an object")}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_official_checkpoint(tmp_path / "obj.pth")  # weights_only refuses arbitrary objects
    assert main(["convert", "factseg", str(tmp_path / "missing.pth"), str(tmp_path / "x")]) == 2


def test_foreground_miou_leaves_out_the_background_class():
    cm = np.array([[90, 5, 5], [2, 8, 0], [0, 5, 5]])
    metrics = compute_metrics(cm, ["bg", "a", "b"], background_index=0)
    ious = [row["iou"] for row in metrics["per_class"]]
    assert metrics["miou"] == pytest.approx(np.mean(ious))
    assert metrics["miou_foreground"] == pytest.approx(np.mean(ious[1:]))
    assert "mIoU without the background class" in format_table(metrics)
    assert "miou_foreground" not in compute_metrics(cm)
    with pytest.raises(ConfigError, match="background index 3"):
        compute_metrics(cm, background_index=3)


def _fa_auc_and_fused_iou(model: torch.nn.Module, split: Path, mean, std) -> tuple[float, float]:
    """ROC AUC of the FA logit for foreground vs background pixels, and the fused prediction's foreground IoU."""
    scores, labels, inter, union = [], [], 0, 0
    for sample in find_samples(split):
        x = torch.from_numpy(normalize(read_sample_image(sample), mean, std).transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            fa = model.branches(x)[1][0, 0].numpy()
            fused = model(x).argmax(1)[0].numpy() > 0
        truth = read_mask(sample.mask) > 0
        scores.append(fa.ravel())
        labels.append(truth.ravel())
        inter, union = inter + (fused & truth).sum(), union + (fused | truth).sum()
    score, label = np.concatenate(scores), np.concatenate(labels)
    ranks = rankdata(score)
    positives, negatives = label.sum(), (~label).sum()
    auc = (ranks[label].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return float(auc), float(inter / union)


def test_cp_loss_trains_the_fa_branch_on_small_objects(tmp_path: Path):
    """Small discs (≈11 % of pixels) on a large background: predicting all-foreground scores IoU ≈ 0.11."""
    root = make_synthetic_dataset(tmp_path / "data", num_train=16, num_val=8, num_test=0, size=64, num_classes=2,
                                  seed=5)
    config = quick_config(root, tmp_path / "runs", "fs", "model.name=factseg",
                          "model.args={fpn_channels: 64, decoder_channels: 32}", "loss.name=som",
                          "loss.som_ratio=0.25", "trainer.max_epochs=8", "optimizer.lr=0.003", "data.augment=none",
                          "trainer.log_images=0", "trainer.log_worst_images=0", "scheduler.warmup_steps=5")
    run = train(config)
    model, spec = load_model(run)
    torch.manual_seed(0)
    untrained = create_model("factseg", classes=2, encoder="resnet18", fpn_channels=64, decoder_channels=32).eval()
    auc_before, _ = _fa_auc_and_fused_iou(untrained, root / "val", spec.mean, spec.std)
    auc, fg_iou = _fa_auc_and_fused_iou(model, root / "val", spec.mean, spec.std)
    assert auc > 0.85 and auc > auc_before + 0.15, (auc_before, auc)
    assert fg_iou > 0.3, fg_iou  # ≈ 3× the all-foreground IoU
    out = tmp_path / "eval"
    assert main(["eval", str(run), str(root / "val"), "-o", str(out), "--metrics-only", "--mode", "slide",
                 "--window", "48", "--stride", "32", "--background-index", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["miou_foreground"] == pytest.approx(metrics["per_class"][1]["iou"])
    assert metrics["miou_foreground"] > 0.3
