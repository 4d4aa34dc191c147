"""FactSeg parity figures against the official model's outputs (../shared/reference/factseg_parity), in float64
(what tests/test_factseg.py asserts) and float32 (what training and inference run in), for docs/benchmarks.md.

    python benchmarks/factseg_parity.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segwise.convert.factseg import convert_official_state_dict  # noqa: E402
from segwise.losses import build_loss  # noqa: E402
from segwise.models import create_model  # noqa: E402
from tests.test_factseg import PARITY, _rule_weights  # noqa: E402  (the official weights, rebuilt from their rule)


def main() -> None:
    if not PARITY.is_dir():
        sys.exit(f"{PARITY} not found")
    state = convert_official_state_dict(_rule_weights(json.loads((PARITY / "state_dict_keys.json").read_text())))
    official_loss = json.loads((PARITY / "loss.json").read_text())["value"]
    target = torch.from_numpy(np.load(PARITY / "target.npy")).long()
    print(f"torch {torch.__version__}; official som loss {official_loss!r}")
    for dtype in (torch.float64, torch.float32):
        model = create_model("factseg", classes=16, encoder="resnet50")
        model.load_state_dict(state, strict=True)
        model = model.to(dtype).eval()
        x = torch.from_numpy(np.load(PARITY / "input.npy")).to(dtype)
        with torch.no_grad():
            sr, fa = model.branches(x)
            log_q = model(x)
        diffs = [(ours - torch.from_numpy(np.load(PARITY / f"{name}.npy")).to(dtype)).abs().max().item()
                 for name, ours in (("sr_logits", sr), ("fa_logits", fa), ("probs", log_q.exp()))]
        agree = (log_q.argmax(1) == torch.from_numpy(np.load(PARITY / "probs.npy")).argmax(1)).float().mean().item()
        loss = build_loss("som", 16, 255, som_ratio=0.1).losses["som"](log_q, target).item()
        print(f"{str(dtype).removeprefix('torch.')}: max |diff| SR {diffs[0]:.2g} / FA {diffs[1]:.2g} / probs "
              f"{diffs[2]:.2g}; argmax agrees on {100 * agree:.4g} %; som loss {loss!r} "
              f"(rel. {abs(loss - official_loss) / official_loss:.2g})")


if __name__ == "__main__":
    main()
