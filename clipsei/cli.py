"""Command line: ``clipsei <command> ...``. The only module that prints.

Each command is a pair of functions: ``_add_<name>_arguments(parser)`` and
``_run_<name>(args) -> int``, registered in ``_COMMANDS``. Errors a user can fix
(a bad path, an empty folder, a malformed manifest) are reported as one line on
stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__

# name -> (help, add_arguments, run); filled in below each command's functions.
_COMMANDS: dict = {}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipsei", description="Find mislabeled images with CLIP embeddings and SEI."
    )
    parser.add_argument("--version", action="version", version=f"clipsei {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in _COMMANDS.items():
        add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    run = _COMMANDS[args.command][2]
    try:
        return int(run(args) or 0)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as err:
        print(f"clipsei {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clipsei {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130


# --- commands ------------------------------------------------------------------------------
# Each helper adds its command's two functions and one _COMMANDS entry in its own block.


# --- embed (issue 4) ---


def _add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image folder (one subfolder per class) or CSV/Parquet "
                        "manifest (path,label[,group], paths relative to the manifest)")
    parser.add_argument("--labels", metavar="MANIFEST", default=None,
                        help="manifest whose paths are relative to PATH (a folder)")
    parser.add_argument("--model", default="ViT-B-32",
                        help="open_clip model name, hf-hub:org/repo or local-dir:PATH")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k",
                        help="pretrained tag, checkpoint file, or 'none' (random weights)")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="embedding cache folder (default: no cache)")
    parser.add_argument("--out", metavar="DIR", default="clipsei_embeddings",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=None,
                        help="decoding processes (default: chosen for the device)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _run_embed(args) -> int:
    from .data import load_image_table
    from .embed import embed_images, load_clip_model

    table = load_image_table(args.path, labels=args.labels)
    try:
        model = load_clip_model(args.model, args.pretrained, device=args.device)
    except RuntimeError as err:  # weights that cannot be fetched: one line, not a traceback
        print(f"clipsei embed: error: {err}", file=sys.stderr)
        return 2
    result = embed_images(table, model, cache_dir=args.cache, batch_size=args.batch_size,
                          num_workers=args.num_workers, progress=sys.stderr.isatty())
    out = _write_embed_outputs(args.out, result, model)
    n_failed = len(result.failures)
    print(f"embedded {result.indices.size} of {len(table)} images with {model.name} "
          f"({model.weights_id}): {result.n_cached} from cache, {result.n_encoded} encoded; "
          f"{n_failed} failed" + (f" (see {out / 'failures.csv'})" if n_failed else ""))
    print(f"wrote {out / 'embeddings.npy'} {result.embeddings.shape} float32, labels.npy, "
          "samples.csv, class_names.json, failures.csv, embed.json")
    return 0


def _write_embed_outputs(out, result, model):
    """embeddings.npy (M, D) float32, labels.npy (M,) int64, samples.csv (index, path, label,
    class_name[, group]), class_names.json, failures.csv (index, path, reason), embed.json."""
    import json
    from pathlib import Path

    import numpy as np
    import pandas as pd

    out, table = Path(out), result.table
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "embeddings.npy", result.embeddings)
    np.save(out / "labels.npy", result.labels)
    samples = pd.DataFrame({"index": result.indices,
                            "path": [table.describe(i) for i in result.indices],
                            "label": result.labels,
                            "class_name": [table.class_names[k] for k in result.labels]})
    if table.groups is not None:
        samples["group"] = table.groups[result.indices]
    samples.to_csv(out / "samples.csv", index=False)
    result.failures.to_csv(out / "failures.csv", index=False)
    (out / "class_names.json").write_text(json.dumps(table.class_names, indent=1))
    (out / "embed.json").write_text(json.dumps({
        "model": model.name, "pretrained": model.pretrained, "weights_id": model.weights_id,
        "embed_dim": model.embed_dim, "n_images": len(table),
        "n_embedded": int(result.indices.size), "n_failed": len(result.failures)}, indent=1))
    return out


_COMMANDS["embed"] = ("Embed images with a frozen open_clip model (cached, resumable).",
                      _add_embed_arguments, _run_embed)
# --- end embed ---

# --- scan / relabel / demo (the front door) ---


def _add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="PATH",
                        help="a folder with one subfolder per class, or a manifest (CSV/Parquet)")
    parser.add_argument("--labels", metavar="MANIFEST",
                        help="manifest path,label[,group] with paths relative to PATH")
    parser.add_argument("--model", default="ViT-B-32",
                        help="open_clip model name or hf-hub:org/repo (default ViT-B-32)")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k",
                        help="weights tag or checkpoint file (default laion2b_s34b_b79k)")
    parser.add_argument("--prompts", default="generic",
                        help="prompt set: generic, chest_xray, dermoscopy, fundus, histology, "
                             "mri, or a .json/.yaml file of your own")
    parser.add_argument("--out", required=True, metavar="DIR", help="where results are written")
    parser.add_argument("--cache", metavar="DIR", help="embedding cache (re-runs skip images)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--method", help="detector method (default: the engine's)")
    parser.add_argument("--n-epochs", type=int, help="epochs of head training")
    parser.add_argument("--random-state", type=int, default=0)


def _run_scan(args) -> int:
    from .data import load_image_table
    from .embed import load_clip_model
    from .pipeline import scan

    options = {key: getattr(args, key) for key in ("method", "n_epochs")
               if getattr(args, key) is not None}
    load_image_table(args.source, labels=args.labels)  # bad input fails before the model loads
    try:
        model = load_clip_model(args.model, args.pretrained, device=args.device)
    except RuntimeError as err:  # weights that cannot be fetched: one line, not a traceback
        print(f"clipsei scan: error: {err}", file=sys.stderr)
        return 2
    result = scan(args.source, labels=args.labels, model=model, prompts=args.prompts,
                  cache_dir=args.cache, out=args.out, random_state=args.random_state,
                  batch_size=args.batch_size, progress=sys.stderr.isatty(), **options)
    _print_scan_summary(result.summary, args.out)
    return 0


def _print_scan_summary(summary: dict, out) -> None:
    print(f"scored {summary['n_scored']} of {summary['n_images']} images "
          f"({summary['n_failed']} unreadable, listed in failures.csv)")
    cutoff = (f"cutoff {summary['cutoff']:.3f} on label_score" if summary["cutoff"] is not None
              else "one cutoff on label_score per class, in summary.json")
    print(f"flagged {summary['n_flagged']} ({summary['flagged_fraction']:.1%}) as likely "
          f"mislabeled; {cutoff}; estimated label errors {summary['estimated_error_rate']:.1%}")
    print(f"wrote {out}/issues.csv, summary.json and report.html")


def _add_relabel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan_dir", metavar="DIR", help="output folder of clipsei scan")
    parser.add_argument("--accept-above", type=float, required=True, metavar="P",
                        help="take a flagged image's suggested label when its confidence >= P")
    parser.add_argument("--drop-flagged", action="store_true",
                        help="leave out flagged images whose suggestion was not taken")
    parser.add_argument("--out", metavar="FILE",
                        help="manifest to write (default DIR/corrected_manifest.csv)")


def _run_relabel(args) -> int:
    from .pipeline import relabel

    manifest = relabel(args.scan_dir, accept_above=args.accept_above,
                       drop_flagged=args.drop_flagged, out=args.out)
    counts = manifest["action"].value_counts()
    print(f"relabelled {counts.get('relabelled', 0)}, kept {counts.get('flagged_kept', 0)} "
          f"flagged unchanged, {len(manifest)} rows in {manifest.attrs['path']}")
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

    found = run_demo(args.out, features=args.features, noise_rate=args.noise_rate,
                     random_state=args.random_state, progress=sys.stderr.isatty())
    source = ("the images' own pixels (no pretrained CLIP weights ship offline)"
              if found["features"] == "pixels" else
              "the bundled tiny CLIP model with RANDOM weights (a pipeline check, not a detector)")
    print(f"scikit-learn digits: {found['n_images']} PNG files, {found['n_injected']} given a "
          f"wrong label on purpose; features: {source}")
    print(f"flagged {found['n_flagged']}; {found['n_found']} of them are planted errors: "
          f"precision {found['precision']:.0%}, recall {found['recall']:.0%}")
    print(f"report: {found['report']}  (true labels in {found['out']}/truth.csv)")
    return 0


_COMMANDS["scan"] = ("find likely mislabeled images in a folder or manifest",
                     _add_scan_arguments, _run_scan)
_COMMANDS["relabel"] = ("write a corrected manifest from a scan", _add_relabel_arguments,
                        _run_relabel)
_COMMANDS["demo"] = ("offline demo: digits with planted label errors", _add_demo_arguments,
                     _run_demo)

# --- end scan / relabel / demo ---


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
                             "cleanlab,knn (default all)")
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
