"""Command line: ``clipsei <command> ...``. The only module that prints.

Each command is a pair of functions: ``_add_<name>_arguments(parser)`` and
``_run_<name>(args) -> int``, registered in ``_COMMANDS``. Errors a user can fix
(a bad path or option, an unwritable output, a malformed manifest) are reported as one
line on stderr with exit status 2, never as a traceback, and output paths are checked
before any work. Python warnings and log records reach stderr once each, one line apiece.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from . import __version__

# name -> (help, add_arguments, run); filled in below each command's functions.
_COMMANDS: dict = {}


class _UsageError(Exception):
    """A bad command line, reported as one line instead of argparse's usage text."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message}")


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """-v/-q, accepted before and after the command (the command's copy keeps the main
    parser's value unless given)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="log progress details")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="log errors only (no progress bars or warnings on stderr)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clipsei",
                     description="Find mislabeled images with CLIP embeddings and SEI.")
    parser.add_argument("--version", action="version", version=f"clipsei {__version__}")
    _add_verbosity(parser, False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        _add_verbosity(sub, argparse.SUPPRESS)
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
    with _one_line_logging(level):
        run = _COMMANDS[args.command][2]
        try:
            return int(run(args) or 0)
        except (FileNotFoundError, ValueError, TypeError, ImportError) as err:
            print(f"clipsei {args.command}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"clipsei {args.command}: interrupted; finished work is kept", file=sys.stderr)
            return 130


class _Once(logging.Filter):
    """Let each distinct message through once: a warning that is also logged shows once."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def first_time(self, message: str) -> bool:
        new = message not in self.seen
        self.seen.add(message)
        return new

    def filter(self, record: logging.LogRecord) -> bool:
        return self.first_time(record.getMessage())


class _one_line_logging:
    """Log records and Python warnings reach stderr as one line each, each message once
    (warnings keep their category for code that records them); restored on exit."""

    def __init__(self, level: int):
        self.level, self.once = level, _Once()
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(self.once)

    def __enter__(self):
        root = logging.getLogger()
        self.saved = (root.level, root.handlers[:], warnings.formatwarning)
        root.handlers = [self.handler]
        root.setLevel(self.level)
        warnings.formatwarning = self._format
        self.filters = warnings.catch_warnings()
        self.filters.__enter__()
        if self.level > logging.WARNING:
            warnings.simplefilter("ignore")
        return self

    def _format(self, message, category, filename, lineno, line=None) -> str:
        text = str(message)
        return f"WARNING: {text}\n" if self.once.first_time(text) else ""

    def __exit__(self, *exc):
        self.filters.__exit__(*exc)
        root = logging.getLogger()
        root.setLevel(self.saved[0])
        root.handlers = self.saved[1]
        warnings.formatwarning = self.saved[2]
        return False


# --- commands ---------------------------------------------------------------------------------
# Each helper adds its command's two functions and one _COMMANDS entry in its own block.


def _int_at_least(minimum: int, expected: str):
    """argparse type: an integer >= ``minimum``; the error says ``expected``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _add_image_arguments(parser: argparse.ArgumentParser, *, source_help: str) -> None:
    """The arguments embed and scan share: images, manifest, model, weights, cache, device."""
    parser.add_argument("source", metavar="PATH", help=source_help)
    parser.add_argument("--manifest", metavar="MANIFEST", default=None,
                        help="manifest path,label[,group] whose paths are relative to PATH "
                             "(a folder)")
    parser.add_argument("--labels", dest="labels_manifest", metavar="MANIFEST",
                        default=None, help=argparse.SUPPRESS)  # deprecated name of --manifest
    parser.add_argument("--model", default="ViT-B-32",
                        help="open_clip model name, hf-hub:org/repo or local-dir:PATH "
                             "(default %(default)s)")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k",
                        help="weights tag, checkpoint file, or 'none' (random weights; a "
                             "pipeline check, not a scan) (default %(default)s)")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="embedding cache folder; re-runs skip cached images (default: none)")
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--num-workers", type=_non_negative_int, default=None,
                        help="decoding processes (default: chosen for the device)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--intensity-window", dest="intensity", action="store_const",
                        const="window", default="none",
                        help="stretch each image's 1st-99th percentile grey levels to 0-255 "
                             "before embedding (for dark medical exports with few grey levels)")


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
    """Check the output folders of ``args`` (by option name) before any work."""
    from ._paths import check_output_dir

    for option in out_options:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            check_output_dir(value, option=option, require_ours=option != "--cache")


def _progress(args) -> bool:
    return sys.stderr.isatty() and not args.quiet


# --- embed (issue 4) ---


def _add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    _add_image_arguments(parser, source_help="image folder (one subfolder per class) or "
                         "CSV/Parquet manifest (path,label[,group], paths relative to it)")
    parser.add_argument("--out", metavar="DIR", default="clipsei_embeddings",
                        help="output folder (default: %(default)s)")


def _run_embed(args) -> int:
    from .embed_folder import embed_to_folder

    _check_outputs(args, "--out", "--cache")
    written = embed_to_folder(args.source, manifest=_manifest(args), model=args.model,
                              pretrained=args.pretrained, device=args.device,
                              cache_dir=args.cache, out=args.out, batch_size=args.batch_size,
                              num_workers=args.num_workers, progress=_progress(args),
                              intensity=args.intensity)
    n_failed = written["n_failed"]
    print(f"embedded {written['n_embedded']} of {written['n_images']} images with "
          f"{written['model']} ({written['weights_id']}): {written['n_cached']} from cache, "
          f"{written['n_encoded']} encoded; {n_failed} failed"
          + (f" (see {written['out']}/failures.csv)" if n_failed else ""))
    print(f"wrote {written['out']}/embeddings.npy {tuple(written['shape'])} float32, labels.npy, "
          "samples.csv, class_names.json, failures.csv, embed.json")
    return 0


_COMMANDS["embed"] = ("Embed images with a frozen open_clip model (cached, resumable).",
                      _add_embed_arguments, _run_embed)
# --- end embed ---

# --- scan / relabel / demo (the front door) ---


def _add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    _add_image_arguments(parser, source_help="a folder with one subfolder per class, or a "
                         "manifest (CSV/Parquet)")
    parser.add_argument("--prompts", default="generic",
                        help="prompt set: generic, chest_xray, dermoscopy, fundus, histology, "
                             "mri, or a .json/.yaml file of your own")
    parser.add_argument("--out", required=True, metavar="DIR", help="where results are written")
    parser.add_argument("--method", help="detector method (default: the engine's)")
    parser.add_argument("--n-epochs", type=_positive_int, help="epochs of head training")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--captions", action="store_true",
                        help="PATH is a caption manifest (path,caption): flag image-caption "
                             "pairs that disagree, instead of label errors")
    parser.add_argument("--n-neighbors", type=_positive_int, default=10,
                        help="neighbours per modality with --captions (default %(default)s)")
    parser.add_argument("--precision", dest="target_precision", type=float, metavar="P",
                        help="flag as many as keep the expected precision >= P (e.g. 0.9)")
    parser.add_argument("--review-budget", dest="max_flags", type=_non_negative_int,
                        metavar="N",
                        help="flag the N likeliest errors (at most N with --precision)")
    parser.add_argument("--trusted", metavar="MANIFEST.csv", default=None,
                        help="CSV with a path column: verified images, never flagged")


def _run_scan(args) -> int:
    from .pipeline import load_images, load_model, scan

    if args.captions:
        return _run_caption_scan(args)
    _check_outputs(args, "--out", "--cache")
    options = {key: getattr(args, key) for key in ("method", "n_epochs", "target_precision",
                                                   "max_flags") if getattr(args, key) is not None}
    from . import check_detector_options

    check_detector_options(**options)  # a bad option fails before the model loads
    manifest = _manifest(args)
    table = load_images(args.source, manifest=manifest)  # bad input fails before the model loads
    trusted = None
    if args.trusted is not None:
        from .images.trusted import find_trusted_rows

        trusted = find_trusted_rows(args.trusted, table.paths, source=args.source)
    # with a cache, scan() loads the model only if some embedding is missing from it
    model = args.model if args.cache else load_model(args.model, args.pretrained,
                                                     device=args.device)
    result = scan(args.source, manifest=manifest, model=model, pretrained=args.pretrained,
                  device=args.device, prompts=args.prompts, trusted=trusted,
                  cache_dir=args.cache, out=args.out, random_state=args.random_state,
                  batch_size=args.batch_size, progress=_progress(args),
                  intensity=args.intensity, **options)
    _print_scan_summary(result.summary, args.out)
    return 0


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
                           random_state=args.random_state)
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
    rate = summary.get("calibrated_error_rate")  # calibrated where there is one
    rate = summary.get("estimated_error_rate") if rate is None else rate
    print(f"flagged {summary['n_flagged']} ({summary['flagged_fraction']:.1%}) as likely "
          f"mislabeled; {cutoff}"
          + (f"; estimated label errors {rate:.1%}" if rate is not None else ""))
    found = {k: v for k, v in (summary.get("data_issues") or {}).items()
             if v and k not in ("label_issue", "n_duplicate_groups")}
    if found:
        print("other issues: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in found.items()))
    if summary.get("expected_errors_flagged") is not None:
        print(f"expected real errors: {summary['expected_errors_flagged']:.0f} among the flags, "
              f"{summary['expected_errors_unflagged']:.0f} left unflagged")
    print(f"wrote {out}/issues.csv, summary.json and report.html")
    _print_warnings(summary.get("warnings"))


def _print_warnings(messages) -> None:
    """The run's warnings, after its summary, on stdout: they qualify the results."""
    for message in messages or []:
        print(f"WARNING: {message}")


def _add_relabel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan_dir", metavar="DIR", help="output folder of clipsei scan")
    parser.add_argument("--accept-above", type=float, required=True, metavar="P",
                        help="take a flagged image's suggested label when its confidence >= P")
    parser.add_argument("--drop-flagged", action="store_true",
                        help="leave out flagged images whose suggestion was not taken")
    parser.add_argument("--clean", action="store_true",
                        help="also leave out outliers, images with property issues and all "
                             "but one of each duplicate set (default FILE "
                             "DIR/clean_manifest.csv); implies --drop-flagged")
    parser.add_argument("--out", metavar="FILE",
                        help="manifest to write (default DIR/corrected_manifest.csv)")


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


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from .demo import DEMO_FEATURES

    parser.add_argument("--out", default="demo_out", metavar="DIR",
                        help="where the images and the scan go (default ./demo_out)")
    parser.add_argument("--features", choices=DEMO_FEATURES, default="pixels",
                        help="pixels (default; finds the errors) or clipsei-tiny (the bundled "
                             "CLIP model with random weights; shows the image pipeline)")
    parser.add_argument("--noise-rate", type=float, default=0.1, help="share of wrong labels")
    parser.add_argument("--random-state", type=int, default=0)


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
                     _add_scan_arguments, _run_scan)
_COMMANDS["relabel"] = ("write a corrected manifest from a scan", _add_relabel_arguments,
                        _run_relabel)
_COMMANDS["demo"] = ("offline demo: digits with planted label errors", _add_demo_arguments,
                     _run_demo)

# --- end scan / relabel / demo ---


# --- export (issue 17) ---
def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan_dir", metavar="DIR", help="output folder of clipsei scan")
    parser.add_argument("--fiftyone", required=True, metavar="NAME",
                        help="build a persistent FiftyOne dataset NAME (pip install "
                             "'clipsei[fiftyone]'); open it with fiftyone.load_dataset(NAME)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing FiftyOne dataset of that name")


def _run_export(args) -> int:
    from .pipeline import ScanResult

    dataset = ScanResult.load(args.scan_dir).to_fiftyone(args.fiftyone, overwrite=args.overwrite,
                                                         persistent=True)
    print(f"FiftyOne dataset {dataset.name!r}: {len(dataset)} samples; open it with "
          f"fiftyone.launch_app(fiftyone.load_dataset({dataset.name!r}))")
    return 0


_COMMANDS["export"] = ("hand a scan to FiftyOne", _add_export_arguments, _run_export)
# --- end export ---


# --- bench (issue 3) ---
def _add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH.npz",
                        help="features (N, D), labels (N,) and optional true_labels, "
                             "class_names, text_features")
    parser.add_argument("--noise", choices=("symmetric", "asymmetric", "confusion"), default=None,
                        help="noise to inject into clean labels (files without true_labels; "
                             "default symmetric)")
    parser.add_argument("--rate", type=float, default=0.2, help="injected noise rate (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and the methods")
    parser.add_argument("--mapping", default=None, metavar="JSON",
                        help='asymmetric mapping {"from": "to"} by class index or name '
                             "(default c -> c+1 mod K)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of clipsei,sei_paper,aum,entropy_integral,"
                             "cleanlab,knn and, with text_features, zero_shot (default all)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the result as JSON")


def _run_bench(args) -> int:
    import json
    from pathlib import Path

    from .evaluation.bench import format_bench_table, load_bench_npz, run_bench
    from .evaluation.noise import load_noise_mapping

    data = load_bench_npz(args.path)
    n_classes = (int(data.labels.max()) + 1 if data.text_features is None
                 else data.text_features.shape[0])
    mapping = None if args.mapping is None else load_noise_mapping(
        args.mapping, n_classes=n_classes, class_names=data.class_names)
    result = run_bench(data.features, data.labels, true_labels=data.true_labels,
                       noise=args.noise, rate=args.rate, seed=args.seed, methods=args.methods,
                       text_features=data.text_features, mapping=mapping)
    result["path"] = str(args.path)
    print(format_bench_table(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


_COMMANDS["bench"] = ("benchmark every detector on an .npz of features and labels",
                      _add_bench_arguments, _run_bench)
# --- end bench ---


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
