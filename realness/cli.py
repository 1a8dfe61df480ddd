"""The `realness` command: one subcommand per public function.

    realness run          -> realness.pipeline.run (images -> descriptions -> scores -> maps -> report)
    realness train-core   -> realness.core.training.train_core
    realness score-core   -> realness.scoring.score_folder
    realness eval         -> realness.evaluation.evaluate_file
    realness train-describer -> describe.training.train_describer
    realness describe     -> describe.describer.describe_folder
    realness adapter      -> describe.adapters.check_adapter / merge_adapter
    realness serve        -> describe.serve.serve
    realness annotate     -> describe.annotate.annotate
    realness eval-describer -> realness.gate.evaluate_describer
    realness map          -> realness.dream.map_folder
    realness eval-maps    -> realness.dream.evaluate_maps
    realness train-maps   -> realness.dream.artifact_training.train_artifact_map
    realness models       -> realness.registry.list_models
"""

from __future__ import annotations

import logging
import sys

# One exit-code rule for every command (README, "Exit codes").
EXIT_OK, EXIT_SOME_FAILED, EXIT_NOTHING_DONE = 0, 1, 2


def exit_code(ok: int, failed: int) -> int:
    """0 when every item was done, 1 when some failed (the command lists them), 2 when none could be done."""
    if not failed:
        return EXIT_OK
    return EXIT_SOME_FAILED if ok else EXIT_NOTHING_DONE


def _list_failed(failed: dict, limit: int = 20) -> None:
    for name, reason in list(failed.items())[:limit]:
        print(f"  failed {name}: {reason}")
    if len(failed) > limit:
        print(f"  ... and {len(failed) - limit} more")


def _list_skipped(summary: dict, limit: int = 10) -> None:
    """What a folder scan left out, by reason: files without an image extension on one line, then each other
    entry (a subfolder, a FIFO, a broken link) with why."""
    reasons = summary.get("skipped_reasons") or dict.fromkeys(summary.get("skipped_files", []), "no image extension")
    plain = [name for name, why in reasons.items() if why == "no image extension"]
    if plain:
        print(f"{len(plain)} file(s) without an image extension left out: {', '.join(plain[:limit])}")
    for name, why in [(n, w) for n, w in reasons.items() if w != "no image extension"][:limit]:
        print(f"  left out {name}: {why}")


def _run(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.pipeline import RunConfig, run

    (cfg,) = parse_dataclasses([RunConfig], argv, prog="realness run",
                                   description="End to end: describe, score (CORE) and map (DREAM) every image of a "
                                               "folder, "
                                               "then write scores.csv, descriptions.jsonl, maps/ and report.html. "
                                               "Rerun the same command to resume. The --dream.* options set the maps.")
    s = run(cfg)
    print(f"scored {s['ok']} of {s['images']} image(s) ({s['skipped_already_done']} already done, "
          f"{len(s['failed'])} failed) -> {cfg.out}/report.html")
    _list_failed(s["failed"])
    _list_skipped(s)
    if s["placeholders"]:
        print(f"WARNING: placeholder model(s) with random weights: {', '.join(s['placeholders'])}; "
              "their output means nothing (no network to fetch the real defaults)")
    describer = s["models"].get("describer") or {}
    if describer.get("stands_in_for") and not describer.get("placeholder"):
        gate = describer.get("measured") or {}
        print(f"descriptions by the offline describer {describer['name']} (no network for {describer['stands_in_for']})"
              + (f": {gate['summary']}" if gate.get("summary") else ""))
    if (s["models"].get("core") or {}).get("chosen"):
        print(f"CORE {s['models']['core']['name']}: {s['models']['core']['chosen']}")
    return exit_code(s["ok"], len(s["failed"]))


def _train_core(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.core.training import CoreTrainConfig, train_core

    (cfg,) = parse_dataclasses([CoreTrainConfig], argv, prog="realness train-core",
                               description="Train / cross-validate CORE (the paper's recipe). "
                                           "For several GPUs use: accelerate launch training/train_core.py ...")
    train_core(cfg)
    return 0


def _score_core(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.scoring import ScoreCoreConfig, score_folder

    (a,) = parse_dataclasses([ScoreCoreConfig], argv, prog="realness score-core",
                             description="Score every image of a folder with a trained CORE model.")
    r = score_folder(a)
    print(f"scored {r['ok']} image(s), {len(r['failed'])} failed -> {a.out}")
    _list_failed(r["failed"])
    _list_skipped(r)
    return exit_code(r["ok"], len(r["failed"]))


def _eval(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.evaluation import EvalConfig, evaluate_file

    (a,) = parse_dataclasses([EvalConfig], argv, prog="realness eval",
                             description="Compare predicted scores with human opinion scores.")
    r = evaluate_file(a)
    ci = f" [{r['srocc_ci95'][0]:.4f}, {r['srocc_ci95'][1]:.4f}]" if r["srocc_ci95"] else ""
    print(f"n={r['n']}  SROCC {r['srocc']:.4f}{ci}  "
          f"PLCC {r['plcc']:.4f}  PLCC(logistic) {r['plcc_logistic']:.4f}  KRCC {r['krcc']:.4f}  RMSE {r['rmse']:.4f}")
    if r["unmatched"]:
        print(f"{len(r['unmatched'])} scored file(s) had no ground truth or no score: {r['unmatched'][:20]}")
    print(f"wrote {a.out}/metrics.json, metrics.csv, scatter.png")
    return exit_code(r["n"], len(r["unmatched"]))


def _map(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.dream.configuration import DreamConfig
    from realness.dream.run import MapConfig, map_folder

    args, config = parse_dataclasses([MapConfig, DreamConfig], argv, prog="realness map",
                                     description="Dense realness maps (DREAM) for a folder of images.")
    s = map_folder(args, config)
    print(f"mapped {len(s['mapped'])}, flat ('No') {len(s['flat'])}, failed {len(s['failed'])} -> {args.out}")
    _list_failed(s["failed"])
    print(f"map source: {s['maps']['source']} ({s['maps']['name']})")
    _list_skipped(s)
    return exit_code(len(s["mapped"]) + len(s["flat"]), len(s["failed"]))


def _reward_audit(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.reward_audit import AuditConfig, run_audit

    (cfg,) = parse_dataclasses([AuditConfig], argv, prog="realness reward-audit",
                               description="Gradient ascent on real photographs against the realness reward: how far "
                                           "it "
                                           "can be pushed, per robustness setting, and whether an audit model agrees.")
    report = run_audit(cfg)
    for name, s in report["settings"].items():
        print(f"{name:14s} attacked {s['gain_attacked']:+.2f} z, audit {s['gain_audit']:+.2f} z after {cfg.steps} steps "
              f"(PSNR {s['steps'][-1]['psnr']:.1f} dB)")
    print(f"wrote {cfg.out}/audit.json, audit.csv, audit.png, grid.png")
    return 0


def _train_maps(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.dream.artifact import ArtifactConfig
    from realness.dream.artifact_training import ArtifactTrainConfig, train_artifact_map
    from realness.dream.corruptions import CorruptionConfig

    train, model, corruption = parse_dataclasses(
        [ArtifactTrainConfig, ArtifactConfig, CorruptionConfig], argv, prog="realness train-maps",
        description="Train the artifact map (DREAM's offline evidence) on real photographs with self-made local "
                    "corruptions; validated on a planted set of held-out photographs. Several GPUs: "
                    "accelerate launch training/train_artifact_map.py ...")
    best = train_artifact_map(train, model, corruption)["best"]
    if best is None:  # a non-main process of `accelerate launch`
        return 0
    print(f"artifact map -> {train.output_dir} (step {best['step']}: validation AUROC {best['auroc']:.3f}, "
          f"AP {best['ap']:.3f}, pointing {best['pointing']:.3f})")
    return 0


def _eval_maps(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.dream.run import EvalMapsConfig, evaluate_maps

    (a,) = parse_dataclasses([EvalMapsConfig], argv, prog="realness eval-maps",
                             description="Localization metrics of maps against binary mask PNGs.")
    r = evaluate_maps(a)
    print(f"n={r['n']}  " + "  ".join(f"{k} {v:.4f}" for k, v in r["mean"].items()))
    for name, f in r["floors"].items():
        print(f"  floor {name:<8} auroc {f['mean']['auroc']:.4f}  ap {f['mean']['ap']:.4f}  "
              f"pointing {f['mean']['pointing_hit']:.4f}")
    if r["no_mask"]:
        print(f"{len(r['no_mask'])} map(s) without a mask: {r['no_mask'][:20]}")
    return exit_code(r["n"], len(r["no_mask"]))


def _train_describer(argv: list[str]) -> int:
    from describe.training import DescriberTrainConfig, train_describer
    from realness.argparsing import parse_dataclasses

    (cfg,) = parse_dataclasses([DescriberTrainConfig], argv, prog="realness train-describer",
                               description="LoRA/QLoRA fine-tuning of the describer VLM. For several GPUs use: "
                                           "accelerate launch training/train_describer.py ...")
    print(f"adapter: {train_describer(cfg)}")
    return 0


def _describe(argv: list[str]) -> int:
    from describe.describer import DescribeConfig, describe_folder
    from realness.argparsing import parse_dataclasses

    (a,) = parse_dataclasses([DescribeConfig], argv, prog="realness describe",
                             description="Describe what looks unreal in every image of a folder (transformers engine).")
    r = describe_folder(a)
    print(f"described {r['described']} image(s) with {r['describer']['name']}, {len(r['failed'])} failed -> {a.out}")
    _list_failed(r["failed"])
    return exit_code(r["described"], len(r["failed"]))


def _adapter(argv: list[str]) -> int:
    import json

    from describe.adapters import AdapterConfig, check_adapter, merge_adapter
    from realness.argparsing import parse_dataclasses

    (a,) = parse_dataclasses([AdapterConfig], argv, prog="realness adapter",
                             description="Check that a LoRA adapter loads and changes the base model, or merge it.")
    if a.action not in ("check", "merge"):
        raise ValueError(f"realness adapter: the action is check or merge, got {a.action!r}")
    if a.action == "merge":
        if not a.out:
            raise ValueError("realness adapter merge needs --out")
        print(f"merged model -> {merge_adapter(a.describer, a.adapter, a.out)}")
        return 0
    report = check_adapter(a.describer, a.adapter)
    print(json.dumps(report, indent=2))
    return 0 if report["changes_output"] and not report["problems"] else 1


def _serve(argv: list[str]) -> int:
    from describe.serve import ServerConfig, serve
    from realness.argparsing import parse_dataclasses

    (cfg,) = parse_dataclasses([ServerConfig], argv, prog="realness serve",
                               description="OpenAI-compatible vLLM server for the describer (base + LoRA adapters).")
    return serve(cfg)


def _annotate(argv: list[str]) -> int:
    import json

    from describe.annotate import AnnotateConfig, annotate
    from realness.argparsing import parse_dataclasses

    (cfg,) = parse_dataclasses([AnnotateConfig], argv, prog="realness annotate",
                               description="Describe every image of a folder or dataset through server(s) or an "
                                           "engine, resumably.")
    s = annotate(cfg)
    print(f"annotated {s['done']}, skipped {s['skipped']} already done, failed {len(s['failed'])} "
          f"({s['images_per_s']} images/s) -> {cfg.out}")
    _list_failed(s["failed"])
    print(json.dumps({k: v for k, v in s.items() if k != "failed"}))
    return exit_code(s["done"] + s["skipped"], len(s["failed"]))


def _eval_describer(argv: list[str]) -> int:
    from realness.argparsing import parse_dataclasses
    from realness.gate import GateConfig, evaluate_describer, format_gate

    (cfg,) = parse_dataclasses([GateConfig], argv, prog="realness eval-describer",
                               description="Distillation gate: CORE with the describer's descriptions vs the reference "
                                           "(GPT-4.1) ones and vs content-free, shuffled, retrieval and image-only "
                                           "floors; "
                                           "verdict agreement, kappa, text similarity, paired bootstrap intervals, "
                                           "cost. "
                                           "Exit 0: passed, 1: failed, 2: bad usage or input.")
    report = evaluate_describer(cfg)
    print(format_gate(report))
    for folder in (cfg.out, cfg.save_to):
        if folder:
            print(f"-> {folder}/gate.json")
    return 0 if report["passed"] or cfg.no_fail else 1


def _models(argv: list[str]) -> int:
    import json

    from realness.argparsing import parse_dataclasses
    from realness.registry import SOURCES, ModelsConfig, as_dicts, format_models, list_models

    (cfg,) = parse_dataclasses([ModelsConfig], argv, prog="realness models",
                               description="Every model name the commands accept: what it is, where it loads from, "
                                           "what stands in when it cannot load, and what it measured. Sources: "
                                           + "; ".join(f"{k}: {v}" for k, v in SOURCES.items()) + ".")
    entries = list_models(cfg.kind)
    print(json.dumps(as_dicts(entries), indent=2) if cfg.json else format_models(entries))
    return 0


COMMANDS = {
    "run": (_run, "end to end: describe, score and map a folder of images; scores.csv + report.html"),
    "train-core": (_train_core, "train and cross-validate CORE (flags: realness train-core --help)"),
    "score-core": (_score_core, "score a folder of images with a trained CORE model"),
    "eval": (_eval, "SROCC/KRCC/PLCC/RMSE with bootstrap intervals and a scatter plot"),
    "train-describer": (_train_describer, "LoRA/QLoRA fine-tuning of the describer VLM"),
    "describe": (_describe, "describe what looks unreal in a folder of images (transformers engine)"),
    "serve": (_serve, "start the OpenAI-compatible vLLM server for the describer (base + LoRA)"),
    "annotate": (_annotate, "describe a folder/dataset through server(s) or an engine, resumably"),
    "adapter": (_adapter, "check a LoRA adapter changes the base model, or merge it into a full model"),
    "eval-describer": (_eval_describer, "distillation gate: describer vs reference text and content-free floors; exit "
                                        "1 when it fails"),
    "map": (_map, "realness maps (DREAM: CLIP, or evidence offline) for a folder of images"),
    "reward-audit": (_reward_audit, "how far the realness reward can be pushed by gradient ascent, and whether an "
                                    "audit model agrees"),
    "train-maps": (_train_maps, "train the artifact map on real photos with self-made local corruptions"),
    "models": (_models, "list every model name: bundled, packaged, hub, test and benchmark models"),
    "eval-maps": (_eval_maps, "pixel AUROC, AP, F1/IoU and pointing game of maps against masks"),
}


def _quiet_libraries(verbose: bool) -> None:
    """This project's own INFO lines; from libraries only errors (no INFO chatter, no loading bars, no
    warnings about fallbacks the run already explains). `--verbose` (any command) brings them all back."""
    import os
    import warnings

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    for own in ("realness", "describe", "__main__"):
        logging.getLogger(own).setLevel(logging.INFO)
    if verbose:
        return
    # "kernels": bitsandbytes, on CPUs with AVX512-BF16, asks it for a hub kernel at import and it warns offline.
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "timm", "bitsandbytes", "kernels", "peft",
                  "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # open_clip logs through the root logger an ERROR for weights it cannot download, though the command
    # then falls back or fails with its own one-line message.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: f"{os.sep}open_clip{os.sep}" not in record.pathname)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        import transformers.utils.logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
        print("usage: realness COMMAND [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<15} {text}")
        print("\n`realness COMMAND --help` explains each flag and its default.")
        return EXIT_OK if argv and argv[0] in ("-h", "--help") else EXIT_NOTHING_DONE  # no command: bad usage
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    _quiet_libraries(verbose)
    restore_sigterm = _stop_on_sigterm()
    try:
        return COMMANDS[argv[0]][0](argv[1:])
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the user gets one line, never a traceback
        print(f"error: {_one_line(err)}", file=sys.stderr)
        if verbose:
            import traceback

            traceback.print_exc()
        elif not _expected(err):
            print("  (an unexpected error: rerun with --verbose for the traceback, and please report it)", file=sys.stderr)
        return EXIT_NOTHING_DONE
    finally:
        restore_sigterm()


def _stop_on_sigterm():
    """SIGTERM (`kill`, `docker stop`, a scheduler's stop) is handled as Ctrl-C is: the command's clean-up runs
    (a vLLM server it started is stopped, not orphaned; what was written is kept) and it exits 130. Python's
    default would end the process at once. Returns what puts the previous handler back (commands also run
    in-process, from tests and notebooks); a no-op off the main thread, where handlers cannot be set."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    return lambda: previous is not None and signal.signal(signal.SIGTERM, previous)  # None: set outside Python


def _expected(err: Exception) -> bool:
    """Errors that come from the input or the machine (bad paths, bad files, full disk, no network,
    missing packages, out of memory), not from a bug."""
    import torch

    return isinstance(err, (OSError, ValueError, ImportError, MemoryError, torch.OutOfMemoryError))


def _one_line(err: Exception) -> str:
    """The error's message on one line; a `DataError` keeps its list of bad rows, one per line."""
    from realness.data import DataError

    if isinstance(err, DataError):  # one problem: one line; several: one line each, under the file's name
        return f"{err.where}: {err.problems[0]}" if len(err.problems) == 1 else str(err)
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return (text or type(err).__name__)[:1000]


if __name__ == "__main__":
    sys.exit(main())
