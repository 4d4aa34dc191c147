"""`segwise plan DATA`: choose a training recipe from the data and the machine, written as a commented config;
`segwise train DATA --auto` plans and trains with it (the plan is kept in the run directory as plan.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags

PLAN_FILE = "plan.yaml"


def add_plan_flags(parser: Any, budget_default: str | None) -> None:
    """--budget and --memory: what the plan may spend (time) and use (memory)."""
    parser.add_argument("--budget", type=flags.duration, default=flags.duration(budget_default) if budget_default else None,
                        help=f"training time to plan for, e.g. 30m, 2h, 90s (default {budget_default or '30m'})")
    parser.add_argument("--memory", type=flags.memory_size,
                        help="memory training may use, e.g. 8GB (default: 90%% of the GPU's, or half the free RAM)")


def register(sub: Any) -> None:
    p = sub.add_parser("plan", help="choose crop, batch, model, loss, sampling and augmentation from the data",
                       description="Read the training split once (sizes, bands, class shares, object sizes, label "
                                   "borders), measure a training step of each candidate model on the device, and "
                                   "write a config whose every choice carries its reason; train it with `segwise "
                                   "train DATA --config plan.yaml`.")
    p.add_argument("data_dir", type=Path, help="data set root holding train/ (and val/)")
    p.add_argument("-o", "--out", type=Path, default=Path(PLAN_FILE),
                   help=f"config file to write (default {PLAN_FILE})")
    add_plan_flags(p, "30m")
    flags.add_device_flag(p)
    flags.add_data_flags(p)
    p.set_defaults(handler=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> None:
    flags.check_device(args.device)
    config = flags.load_args_config(args, args.data_dir)
    flags.check_output_file(args.out, "-o", PLAN_FILE)
    from segwise.io_utils import atomic_write_text
    from segwise.tasks.semantic.plan import make_plan

    plan = make_plan(config, args.budget, args.device, args.memory)
    atomic_write_text(args.out, plan.to_yaml())
    print(f"{plan.table()}\n\nplan written to {args.out}; train it with: segwise train {args.data_dir} --config "
          f"{args.out}")


def auto_config(args: argparse.Namespace, root: Path) -> Any:
    """`train --auto`: the plan under the user's --config, flags and --set; printed, and saved as plan.yaml in the
    run directory (the run is named now so that the plan and the training share it). A named run that already holds
    a plan resumes with it: planning again would measure the machine anew and could change the batch and the
    schedule under the checkpoint."""
    from segwise.config import load_config, merge, read_yaml
    from segwise.engine.run import run_directory
    from segwise.io_utils import atomic_write_text
    from segwise.tasks.semantic.plan import default_device, make_plan

    user = flags.load_args_config(args, root)
    kept = run_directory(user.run) / PLAN_FILE if user.run.name and user.run.resume else None
    if kept is not None and kept.is_file():
        planned, text = read_yaml(kept), None
        print(f"{kept.parent} resumes with the plan it started with ({kept}); --budget and --memory are not planned "
              "again (give a new --name to plan anew)\n")
    else:
        device = args.device or default_device("cpu" if args.cpu else user.trainer.accelerator)
        flags.check_device(device, "--device" if args.device else "trainer.accelerator")
        plan = make_plan(user, args.budget or flags.duration("30m"), device, args.memory)
        print(plan.table() + "\n")
        planned, text = plan.config(), plan.to_yaml()
    given = flags.foreign_config(args.config) or (read_yaml(args.config) if args.config else {})
    config = load_config(None, [*flags.length_overrides(args), *args.overrides],
                         {**flags.config_flags(args), "data.root": str(root)}, base=merge(planned, given))
    directory = run_directory(config.run, config.model.name, config.model.encoder)
    config.run.name = directory.name
    directory.mkdir(parents=True, exist_ok=True)
    if text is not None:
        atomic_write_text(directory / PLAN_FILE, text)
    return config
