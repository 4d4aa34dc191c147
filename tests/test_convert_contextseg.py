"""`segwise convert contextseg`: parity with the ContextSeg PyTorch port (fixtures/contextseg_parity), and refusal of
pickled code and of files of another architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import rule_tensor
from segwise.cli import main
from segwise.convert.contextseg import convert_port_checkpoints
from segwise.errors import CheckpointError
from segwise.models.contextseg import union_images
from segwise.models.spec import load_model

PARITY = Path(__file__).parent / "fixtures" / "contextseg_parity"
pytestmark = pytest.mark.usefixtures("one_thread")


def _port_state(keys_file: str) -> dict[str, torch.Tensor]:
    """The port's state_dict as `model.state_dict()` gave it: every name, aliases holding their first name's tensor."""
    state: dict[str, torch.Tensor] = {}
    for name, shape, _, alias in json.loads((PARITY / keys_file).read_text()):
        if alias is not None:
            state[name] = state[alias]
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.zeros((), dtype=torch.int64)
        else:
            state[name] = rule_tensor(name, tuple(shape))
    return state


def _images(packed: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed, axis=-1 if packed.ndim == 4 else 1)).double()


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Both checkpoints written as the port saves them, converted through the CLI."""
    tmp = tmp_path_factory.mktemp("contextseg")
    embed, former = tmp / "best_loss_model.pth", tmp / "best_model.pth"
    torch.save({"step": 10, "model_state_dict": _port_state("embedder_state_dict_keys.json")}, embed)
    # DDP-prefixed and wrapped in {'state_dict': ...}: the other usual containers
    torch.save({"state_dict": {f"module.{k}": v for k, v in _port_state("transformer_state_dict_keys.json").items()}},
               former)
    main(["convert", "contextseg", str(embed), str(former), "-o", str(tmp / "run"), "--heads", "8",
          "--parts", "body", "wing", "tail"])
    return tmp / "run" / "embed", tmp / "run" / "segment"


def test_embedder_matches_the_port(converted: tuple[Path, Path]) -> None:
    """Code, reconstruction and distance-field logits of the port's AutoencoderEmbed (float64 run stored in
    float32): ours in float64 agree to 1e-6, every pixel through the full-map float64 sums."""
    model, spec = load_model(converted[0])
    assert spec.name == "contextseg_embed" and spec.args["root"] == 2 and spec.args["depth"] == 5
    expected = np.load(PARITY / "outputs.npz")
    sums = json.loads((PARITY / "config.json").read_text())["full_sums_float64"]
    with torch.no_grad():
        out = model.double()(_images(np.load(PARITY / "inputs.npz")["embed_images"]))
    np.testing.assert_allclose(out["code"].numpy(), expected["embed_code"], atol=1e-6, rtol=0)
    for ours, theirs in (("recon", "embed_recon"), ("df", "embed_df")):
        np.testing.assert_allclose(out[ours][..., ::3, ::3].numpy(), expected[theirs], atol=1e-6, rtol=0)
        assert abs(float(out[ours].sum()) - sums[theirs]["sum"]) < 1e-6 * sums[theirs]["abs_sum"]


def test_transformer_membership_scores_match_the_port(converted: tuple[Path, Path]) -> None:
    """Teacher-forced logits of a padded batch of two sketches and the first 3 auto-regressive decoding steps of
    each (the port's test loop) agree to 1e-5; float64, logits up to ~27."""
    model, spec = load_model(converted[1])
    assert spec.args["transformer"]["num_layers"] == 3 and spec.class_names == ["body", "wing", "tail"]
    model = model.double()
    inputs, expected = np.load(PARITY / "inputs.npz"), np.load(PARITY / "outputs.npz")
    sketches = [_images(inputs[f"strokes_{i}"]).permute(2, 0, 1) for i in range(2)]  # S×H×W
    labels = [torch.from_numpy(inputs[f"labels_{i}"]) for i in range(2)]
    steps = len(labels[0])
    strokes = torch.zeros(2, 5, 256, 256, dtype=torch.float64)
    valid = torch.zeros(2, 5, dtype=torch.bool)
    for i, sketch in enumerate(sketches):
        strokes[i, : len(sketch)], valid[i, : len(sketch)] = sketch, True
    group_valid = torch.ones(2, steps, dtype=torch.bool)
    members = torch.zeros(2, steps - 1, 5, dtype=torch.bool)
    for i, lab in enumerate(labels):
        members[i, :, : lab.shape[1]] = lab[: steps - 1].bool()
    with torch.no_grad():
        forced = model(strokes, valid, union_images(strokes, members), group_valid)
    want = expected["former_teacher_forced"]
    for i, sketch in enumerate(sketches):
        np.testing.assert_allclose(forced[i, :, : len(sketch)].numpy(), want[i, :, : len(sketch)], atol=1e-5, rtol=0)
        auto, _ = model.decoder_inputs(sketch[None], torch.ones(1, len(sketch), dtype=torch.bool),
                                       torch.ones(1, steps, dtype=torch.bool))
        np.testing.assert_allclose(auto[0].numpy(), expected[f"former_auto_{i}"], atol=1e-5, rtol=0)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling would run `open(marker, 'w')`
        return open, (str(self.marker), "w")


def test_pickled_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"encoder.0.conv.weight": torch.zeros(2, 3, 3, 3)}, "x": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="cannot be read as plain tensors"):
        convert_port_checkpoints(evil, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_another_architecture_names_its_first_unmatched_key(tmp_path: Path) -> None:
    """A transformer file given as embedder, a FactSeg-like file, and a port transformer with SeqSpaFusion."""
    former = _port_state("transformer_state_dict_keys.json")
    embed = tmp_path / "embed.pth"
    torch.save({"model_state_dict": _port_state("embedder_state_dict_keys.json")}, embed)
    wrong = tmp_path / "wrong.pth"
    torch.save(former, wrong)
    first = next(iter(former))
    with pytest.raises(CheckpointError, match=rf"first unmatched is '{first}' with shape \(256, 256\)"):
        convert_port_checkpoints(wrong, tmp_path / "out")
    torch.save({"resencoder.resnet.conv1.weight": torch.zeros(64, 3, 7, 7), **former}, wrong)
    with pytest.raises(CheckpointError, match=r"'resencoder.resnet.conv1.weight' with shape \(64, 3, 7, 7\)"):
        convert_port_checkpoints(embed, tmp_path / "out", wrong, num_heads=8)
    torch.save({**former, "seqspa_fusion.seq_proj.weight": torch.zeros(256, 256)}, wrong)
    with pytest.raises(CheckpointError, match="SeqSpaFusion"):
        convert_port_checkpoints(embed, tmp_path / "out", wrong, num_heads=8)
    assert not (tmp_path / "out").exists()
