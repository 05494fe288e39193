"""The ``alignkit`` command: ``train``, ``list``, ``eval``, ``pairs``, ``pipeline``, ``doctor``.

User errors (AlignkitError) print one line and exit with code 2; no traceback unless ``--debug`` is given (anywhere
on the command line).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import traceback
import warnings

from alignkit.distributed import is_distributed, is_main, report_error, stopped_by_peer
from alignkit.errors import AlignkitError


def _cmd_list(args: argparse.Namespace) -> int:
    from alignkit.recipe import list_recipes, recipe_description, recipe_hardware

    recipes = list_recipes()
    width = max(map(len, recipes), default=0)
    hardware = {name: recipe_hardware(path) for name, path in recipes.items()}
    hw_width = max(map(len, hardware.values()), default=0)
    for name, path in recipes.items():
        print(f"{name:<{width}}  {hardware[name]:<{hw_width}}  {recipe_description(path)}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from alignkit import lanes
    from alignkit.recipe import load_recipe
    from alignkit.train import train

    recipe = load_recipe(args.recipe, args.overrides)
    evaluates = not args.no_eval and bool(recipe.args.eval_suite)
    suite_needs = None
    if evaluates:
        from alignkit.eval.suite import load_suite

        suite_needs = load_suite(recipe.args.eval_suite).required_runs()  # a bad suite fails before training
    ok = False
    try:
        # The suite's prerequisites that training does not need train beside it (alignkit.lanes).
        run_dir = train(
            recipe, overwrite=args.overwrite, resume=args.resume, side_needs=suite_needs, baseline_eval=evaluates
        )
        ok = True
    finally:
        lanes.finish(ok)
    if not is_main():
        return 0  # rank 0 alone promotes the run and evaluates it (alignkit.distributed)
    print(f"alignkit: trained run in {run_dir}")
    if not evaluates:
        return 0
    from alignkit.eval.command import main as eval_main
    from alignkit.pipeline import ensure_runs

    # The suite's own prerequisites (e.g. the reward model it scores with) are trained first, once.
    ensure_runs(suite_needs, run_dir.parent)
    return eval_main([str(run_dir), "--runs-root", str(run_dir.parent)])


def _cmd_doctor(args: argparse.Namespace) -> int:
    from alignkit.doctor import run

    return run()[0]


def _cmd_eval(argv: list[str]) -> int:
    from alignkit.eval.command import main as eval_main

    return eval_main(argv)


def _cmd_pairs(argv: list[str]) -> int:
    from alignkit.data.onpolicy_cli import main as pairs_main

    return pairs_main(argv)


def _cmd_pipeline(argv: list[str]) -> int:
    from alignkit.stages import main as pipeline_main

    return pipeline_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignkit", description="QLoRA alignment recipes and plugins for TRL.")
    parser.add_argument("--debug", action="store_true", help="on an error, also print its traceback (any position)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train a recipe, then evaluate it")
    p_train.add_argument("recipe", help="recipe name (see `alignkit list`) or path to a recipe YAML")
    p_train.add_argument("overrides", nargs="*", help="key=value overrides of recipe keys, e.g. max_steps=5")
    p_train.add_argument("--overwrite", action="store_true", help="replace a finished run (OVERWRITE=1)")
    p_train.add_argument("--resume", action="store_true", help="continue an interrupted or finished run (RESUME=1)")
    p_train.add_argument("--no-eval", action="store_true", help="skip the recipe's eval suite")
    p_train.set_defaults(func=_cmd_train)
    p_list = sub.add_parser("list", help="list the recipes with a one-line description")
    p_list.set_defaults(func=_cmd_list)
    p_doctor = sub.add_parser("doctor", help="check this machine: hardware, precision, 4-bit, versions, data, disk")
    p_doctor.set_defaults(func=_cmd_doctor)
    sub.add_parser("eval", help="evaluate runs or models (alignkit eval --help)", add_help=False)
    sub.add_parser("pairs", help="build on-policy preference pairs (alignkit pairs --help)", add_help=False)
    sub.add_parser(
        "pipeline", help="SFT, RM, every method from SFT, one report (alignkit pipeline --help)", add_help=False
    )
    return parser


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    # bitsandbytes logs an optional-kernel notice at import on every CPU run, and on CPUs where it looks for a hub
    # kernel (seen on an Intel Xeon with AMX) the `kernels` package logs that offline mode skips its trust check:
    # neither is actionable for users, and alignkit runs offline by design.
    for noisy in ("bitsandbytes", "kernels"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers 5 renamed the key TRL still documents; the message is for library authors, not recipe users.
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
    except ImportError:
        pass
    if not is_main():  # under accelerate launch, progress bars (dataset maps, downloads) are rank 0's alone
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()


def _close_progress_bars() -> None:
    """Finish the progress bars an error interrupted, so the error line starts a line of its own (and is the last)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", [])):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # user errors then print their traceback too (for bug reports)
    argv = [word for word in argv if word != "--debug"]
    _setup_logging()
    # SIGTERM (a killed job, a CI timeout) unwinds like Ctrl-C, so a run without a checkpoint is cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if argv[:1] == ["eval"]:
            return _cmd_eval(argv[1:])
        if argv[:1] == ["pairs"]:
            return _cmd_pairs(argv[1:])
        if argv[:1] == ["pipeline"]:
            return _cmd_pipeline(argv[1:])
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        # `train R --no-eval k=v`: argparse stops filling the positional list at the first option; later key=value
        # words are still overrides. Anything else left over is an error, as with parse_args.
        if args.command == "train" and all("=" in word and not word.startswith("-") for word in extra):
            args.overrides = [*args.overrides, *extra]
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.func(args)
    except AlignkitError as exc:
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        report_error(exc)  # one line per job, also when several ranks hit the same bad input
        if is_distributed():
            # End now: torchrun's agent stops the other ranks at once, before they print the same line, instead
            # of after this interpreter has torn down torch and the process group (seconds on a busy CPU).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.exit_code)
        return exc.exit_code
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(
            f"alignkit: error: no space left on the device writing {exc.filename or 'a file'}; free some space, then "
            "RESUME=1 continues from the last complete checkpoint (earlier reports and checkpoints are intact)",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as exc:
        if stopped_by_peer(exc):
            return 1  # the rank that failed has said why; torchrun's summary names it
        raise
    except KeyboardInterrupt:
        print(
            "alignkit: interrupted; a partial run is kept as runs/<recipe>.partial (RESUME=1 continues)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
