"""Command line: ``clipsei <command> ...``. The only module that prints.

Each command is a pair of functions: ``add_<name>_arguments(parser)`` (in
:mod:`clipsei._cli_args`) and ``_run_<name>(args) -> int``, registered in ``_COMMANDS``.
Errors a user can fix (a bad path or option, an unwritable output, a malformed manifest) are
reported as one line on stderr with exit status 2, never as a traceback, and output paths are
checked before any work. Python warnings and log records reach stderr once each, one line apiece.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from ._cli_args import (add_bench_arguments, add_demo_arguments, add_embed_arguments,
                        add_export_arguments, add_relabel_arguments, add_scan_arguments,
                        add_verbosity, check_ray_address, resolve_cache)
from ._cli_logging import one_line_logging

# name -> (help, add_arguments, run); filled in below each command's functions.
_COMMANDS: dict = {}


class _UsageError(Exception):
    """A bad command line, reported as one line instead of argparse's usage text."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message}")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clipsei",
                     description="Find mislabeled images with CLIP embeddings and SEI.")
    parser.add_argument("--version", action="version", version=f"clipsei {__version__}")
    add_verbosity(parser, False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_verbosity(sub, argparse.SUPPRESS)
        add_arguments(sub)
    return parser


def main(argv=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    if args.verbose and args.quiet:
        print(f"clipsei {args.command}: error: -v and -q exclude each other", file=sys.stderr)
        return 2
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    with one_line_logging(level):
        run = _COMMANDS[args.command][2]
        try:
            resolve_cache(args)
            return int(run(args) or 0)
        except (FileNotFoundError, ValueError, TypeError, ImportError, ConnectionError) as err:
            print(f"clipsei {args.command}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"clipsei {args.command}: interrupted{_what_is_kept(args)}", file=sys.stderr)
            return 130


def _what_is_kept(args) -> str:
    """What an interrupted command leaves behind: only a cache keeps embeddings."""
    if getattr(args, "cache", None):
        return (f"; the embeddings computed so far are kept in {args.cache}: run the same "
                "command again to resume")
    if args.command in ("scan", "embed"):
        return "; nothing was kept (--no-cache; without it a rerun resumes where it stopped)"
    return ""


# --- commands ---------------------------------------------------------------------------------
# Each block holds a command's run function and its _COMMANDS entry (arguments: _cli_args).


def _manifest(args):
    """--manifest, or the deprecated --labels (with a warning)."""
    if args.labels_manifest is not None:
        if args.manifest is not None:
            raise ValueError("give --manifest only (--labels is its deprecated name)")
        print(f"clipsei {args.command}: warning: --labels is deprecated; use --manifest",
              file=sys.stderr)
        return args.labels_manifest
    return args.manifest


def _check_outputs(args, *out_options) -> None:
    """Check the output folders of ``args`` (by option name) and a Ray address before any
    work."""
    from ._paths import check_output_dir

    check_ray_address(getattr(args, "engine", "local"), getattr(args, "ray_address", None))

    for option in out_options:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            check_output_dir(value, option=option, require_ours=option != "--cache")


def _progress(args) -> bool:
    return sys.stderr.isatty() and not args.quiet


# --- embed (issue 4) ---


def _run_embed(args) -> int:
    from .embed_folder import embed_to_folder

    _check_outputs(args, "--out", "--cache")
    written = embed_to_folder(args.source, manifest=_manifest(args), model=args.model,
                              pretrained=args.pretrained, device=args.device,
                              cache_dir=args.cache, out=args.out, batch_size=args.batch_size,
                              num_workers=args.num_workers, progress=_progress(args),
                              intensity=args.intensity, engine=args.engine,
                              ray_address=args.ray_address, decode=args.decode)
    n_failed = written["n_failed"]
    print(f"embedded {written['n_embedded']} of {written['n_images']} images with "
          f"{written['model']} ({written['weights_id']}): {written['n_cached']} from cache, "
          f"{written['n_encoded']} encoded; {n_failed} failed"
          + (f" (see {written['out']}/failures.csv)" if n_failed else ""))
    print(f"wrote {written['out']}/embeddings.npy {tuple(written['shape'])} float32, labels.npy, "
          "samples.csv, class_names.json, failures.csv, embed.json")
    return 0


_COMMANDS["embed"] = ("embed images with a frozen open_clip model (cached, resumable)",
                      add_embed_arguments, _run_embed)
# --- end embed ---

# --- scan / relabel / demo (the front door) ---


def _run_scan(args) -> int:
    from .pipeline import load_images, load_model, scan

    if args.captions:
        if args.engine != "local":
            raise ValueError("--engine ray does not embed caption scans yet; drop --engine")
        return _run_caption_scan(args)
    _check_outputs(args, "--out", "--cache")
    options = {key: getattr(args, key) for key in ("method", "n_epochs", "target_precision",
                                                   "max_flags", "cutoff")
               if getattr(args, key) is not None}
    from . import check_detector_options

    check_detector_options(**options)  # a bad option fails before the model loads
    manifest = _manifest(args)
    table = load_images(args.source, manifest=manifest)  # bad input fails before the model loads
    trusted = None
    if args.trusted is not None:
        from .images.trusted import read_trusted_manifest

        trusted = read_trusted_manifest(args.trusted, table, source=args.source)
    # with a cache, scan() loads the model only if some embedding is missing from it
    model = args.model if args.cache else load_model(args.model, args.pretrained,
                                                     device=args.device)
    result = scan(args.source, manifest=manifest, model=model, pretrained=args.pretrained,
                  device=args.device, prompts=args.prompts, trusted=trusted,
                  cache_dir=args.cache, out=args.out, random_state=args.random_state,
                  batch_size=args.batch_size, progress=_progress(args),
                  intensity=args.intensity, engine=args.engine,
                  ray_address=args.ray_address, decode=args.decode, **options)
    _print_scan_summary(result.summary, args.out)
    if args.audit_sample:
        _write_audit_sheet(result, args)
    return 0


def _write_audit_sheet(result, args) -> None:
    """audit.csv in the scan's output folder: the rows a reviewer should verify (an existing
    sheet is never overwritten: audit-1.csv, ... instead)."""
    path = result.write_audit_sheet(args.out, args.audit_sample, random_state=args.random_state)
    print(f"wrote {path}: verify these {min(args.audit_sample, len(result.issues))} images "
          f"(fill in 'label' where the given one is wrong), then re-scan with --trusted {path}")


def _run_caption_scan(args) -> int:
    from .captions_pipeline import load_caption_manifest, scan_captions
    from .pipeline import load_model

    if _manifest(args) is not None or args.method or args.n_epochs:
        raise ValueError("--captions takes the caption manifest as PATH; --manifest, --labels, "
                         "--method and --n-epochs do not apply")
    _check_outputs(args, "--out", "--cache")
    load_caption_manifest(args.source)  # bad input fails before the model loads
    model = load_model(args.model, args.pretrained, device=args.device)
    result = scan_captions(args.source, model=model, cache_dir=args.cache, out=args.out,
                           n_neighbors=args.n_neighbors, batch_size=args.batch_size,
                           progress=_progress(args), intensity=args.intensity,
                           random_state=args.random_state, decode=args.decode)
    summary = result.summary
    print(f"scored {summary['n_scored']} of {summary['n_pairs']} image-caption pairs "
          f"({summary['n_failed']} unreadable, listed in failures.csv)")
    print(f"flagged {summary['n_flagged']} ({summary['flagged_fraction']:.1%}) as mismatched")
    print(f"wrote {args.out}/issues.csv, summary.json and report.html")
    _print_warnings(summary["warnings"])
    return 0


def _print_scan_summary(summary: dict, out) -> None:
    print(f"scored {summary['n_scored']} of {summary['n_images']} images "
          f"({summary['n_failed']} unreadable, listed in failures.csv)")
    cutoff = (f"cutoff {summary['cutoff']:.3f} on label_score" if summary["cutoff"] is not None
              else "one cutoff on label_score per class, in summary.json")
    rate = summary.get("stated_error_rate")  # the expected real errors' rate
    verified = summary.get("verified")
    rate = None if verified else rate  # with verified images, theirs is the one stated
    signal = summary.get("class_signal") or {}
    rate = f"; estimated label errors {rate:.1%}" if rate is not None else ""
    print(f"flagged {summary['n_flagged']} ({summary['flagged_fraction']:.1%}) as likely "
          f"mislabeled; {cutoff}"
          + (rate if signal.get("informative", True) else
             f"; label errors not estimated ({_why_not_informative(signal)})"))
    found = {k: v for k, v in (summary.get("data_issues") or {}).items()
             if v and k not in ("label_issue", "n_duplicate_groups")}
    if found:
        print("other issues: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in found.items()))
    if verified:
        _print_verified(summary, verified)
    elif signal.get("informative", True) and summary.get("expected_errors_flagged") is not None:
        print(f"expected real errors: {summary['expected_errors_flagged']:.0f} among the flags, "
              f"{summary['expected_errors_unflagged']:.0f} left unflagged")
    print(f"wrote {out}/issues.csv, summary.json and report.html")
    _print_warnings(summary.get("warnings"))


def _why_not_informative(class_signal: dict) -> str:
    return ("too few images to tell" if class_signal.get("too_few_samples")
            else "no class information")


def _print_verified(summary: dict, verified: dict) -> None:
    """The verified images' estimate (the one used), then the label-free one named as such
    (or, refitted on an audit, the error probabilities' rate)."""
    low, high = verified["precision_interval"]
    errors_low, errors_high = verified["n_errors_interval"]
    flags = (f"precision of the flags {verified['precision']:.0%} (80% interval "
             f"{low:.0%}-{high:.0%}), about {verified['errors_flagged']:.0f} real errors among "
             "them" if verified["n_flagged"] else "nothing flagged")
    print(f"from {verified['n_verified_clean'] + verified['n_known_errors']} verified images "
          f"({verified['n_known_errors']} corrected): {flags}; about "
          f"{verified['n_errors']:.0f} label errors among the {verified['n_unverified']} "
          f"unverified images (80% interval {errors_low:.0f}-{errors_high:.0f})")
    if verified.get("error_probability_refitted"):
        print(f"error_probability refitted on the audit: {summary['calibrated_error_rate']:.1%} "
              f"label errors, {summary['expected_errors_unflagged']:.0f} expected left "
              "unflagged (the corrected ones included)")
    elif summary.get("expected_errors_flagged") is not None:
        print("label-free estimate, not used (the model's error probabilities cannot tell a "
              "hard but correct image from an error; the verified images can): "
              f"{summary['calibrated_error_rate']:.1%} label errors, "
              f"{summary['expected_errors_flagged']:.0f} among the flags")


def _print_warnings(messages) -> None:
    """The run's warnings, after its summary, on stdout: they qualify the results."""
    for message in messages or []:
        print(f"WARNING: {message}")


def _run_relabel(args) -> int:
    from pathlib import Path

    from ._paths import check_output_file
    from .relabeling import RELABEL_HEADER, relabel

    default = Path(args.scan_dir) / ("clean_manifest.csv" if args.clean
                                     else "corrected_manifest.csv")
    check_output_file(args.out or default, option="--out", header_end=RELABEL_HEADER)
    manifest = relabel(args.scan_dir, accept_above=args.accept_above,
                       drop_flagged=args.drop_flagged, out=args.out, clean=args.clean)
    counts = manifest["action"].value_counts()
    dropped = (f", dropped {manifest.attrs['n_dropped']} "
               f"{'flagged or duplicate' if args.clean else 'flagged'} rows"
               if args.drop_flagged or args.clean
               else f", kept {counts.get('flagged_kept', 0)} flagged unchanged")
    print(f"relabelled {manifest.attrs['n_relabelled']}{dropped}; {len(manifest)} rows in "
          f"{manifest.attrs['path']}")
    return 0


def _run_demo(args) -> int:
    from .demo import run_demo

    _check_outputs(args, "--out")
    found = run_demo(args.out, features=args.features, noise_rate=args.noise_rate,
                     random_state=args.random_state, progress=_progress(args))
    source = ("the images' own pixels (no pretrained CLIP weights ship offline)"
              if found["features"] == "pixels" else
              "the bundled tiny CLIP model with RANDOM weights (a pipeline check, not a detector)")
    print(f"scikit-learn digits: {found['n_images']} PNG files, {found['n_injected']} given a "
          f"wrong label on purpose; features: {source}")
    print(f"flagged {found['n_flagged']}; {found['n_found']} of them are planted errors: "
          f"precision {found['precision']:.0%}, recall {found['recall']:.0%}")
    print(f"report: {found['report']}  (true labels in {found['out']}/truth.csv)")
    _print_warnings(found.get("warnings"))
    return 0


_COMMANDS["scan"] = ("find likely mislabeled images in a folder or manifest",
                     add_scan_arguments, _run_scan)
_COMMANDS["relabel"] = ("write a corrected manifest from a scan", add_relabel_arguments,
                        _run_relabel)
_COMMANDS["demo"] = ("offline demo: digits with planted label errors", add_demo_arguments,
                     _run_demo)

# --- end scan / relabel / demo ---


# --- export (issue 17) ---
def _run_export(args) -> int:
    from .pipeline import ScanResult

    dataset = ScanResult.load(args.scan_dir).to_fiftyone(args.fiftyone, overwrite=args.overwrite,
                                                         persistent=True)
    print(f"FiftyOne dataset {dataset.name!r}: {len(dataset)} samples; open it with "
          f"fiftyone.launch_app(fiftyone.load_dataset({dataset.name!r}))")
    return 0


_COMMANDS["export"] = ("hand a scan to FiftyOne", add_export_arguments, _run_export)
# --- end export ---


# --- bench (issue 3) ---
def _run_bench(args) -> int:
    import json
    from pathlib import Path

    from .evaluation.bench import format_bench_table, load_bench_npz, run_bench
    from .evaluation.bench_text import load_bench_model
    from .evaluation.noise import load_noise_mapping

    if args.json:
        _check_bench_json(Path(args.json))
    data = load_bench_npz(args.path)
    text_model = None if args.model is None else load_bench_model(
        args.model, args.pretrained, device=args.device)
    n_classes = (int(data.labels.max()) + 1 if data.text_features is None
                 else data.text_features.shape[0])
    mapping = None if args.mapping is None else load_noise_mapping(
        args.mapping, n_classes=n_classes, class_names=data.class_names)
    result = run_bench(data.features, data.labels, true_labels=data.true_labels,
                       noise=args.noise, rate=args.rate, seed=args.seed, methods=args.methods,
                       text_features=data.text_features, mapping=mapping,
                       text_model=text_model, prompt_set=args.prompts,
                       class_names=None if data.class_names is None else list(data.class_names))
    result["path"] = str(args.path)
    print(format_bench_table(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _check_bench_json(path) -> None:
    """--json may replace an earlier bench result, never another file (checked before work)."""
    import json

    from ._paths import check_output_file

    try:
        earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        earlier = None
    if not (isinstance(earlier, dict) and {"methods", "noise_rate", "path"} <= set(earlier)):
        check_output_file(path, option="--json")


_COMMANDS["bench"] = ("benchmark every detector on an .npz of features and labels",
                      add_bench_arguments, _run_bench)
# --- end bench ---


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
