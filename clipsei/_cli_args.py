"""The command line's argument types and per-command argument builders (:mod:`clipsei.cli`
registers them; this module prints nothing)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path


def add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """-v/-q, accepted before and after the command (the command's copy keeps the main
    parser's value unless given)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="log progress details")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="log errors only (no progress bars or warnings on stderr)")


def check_ray_address(engine: str, address, timeout_s: float = 3.0) -> None:
    """Raise a one-line ``ValueError`` when ``--engine ray --address HOST:PORT`` names a port
    nothing answers on within ``timeout_s`` seconds (Ray itself retries for half a minute, then
    raises with a traceback). Other forms (``auto``, ``local``, none) are Ray's to resolve."""
    if engine != "ray" or not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # not HOST:PORT: Ray reports what it makes of it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ValueError(f"--address {address}: no Ray cluster answers there "
                         f"({err.strerror or err}); check the address, or leave --address "
                         "out to start a local instance") from None


def int_at_least(minimum: int, expected: str):
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


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def add_image_arguments(parser: argparse.ArgumentParser, *, source_help: str) -> None:
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
                        help="embedding cache folder, written as images are encoded: a re-run "
                             "or a killed run's re-run skips cached images (default: OUT/cache)")
    parser.add_argument("--no-cache", action="store_true",
                        help="keep no embedding cache (a killed run then keeps nothing)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--num-workers", type=non_negative_int, default=None,
                        help="decoding processes (default: chosen for the device)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local (this machine) or ray (decode and encode on a Ray cluster; "
                             "pip install 'clipsei[ray]') (default %(default)s)")
    parser.add_argument("--address", "--ray-address", dest="ray_address", metavar="ADDR",
                        default=None, help="Ray cluster to join with --engine ray, e.g. "
                                           "HEAD_IP:6379 (default: RAY_ADDRESS, else a cluster "
                                           "'ray start' began on this machine, else a new "
                                           "local instance)")
    parser.add_argument("--intensity-window", dest="intensity", action="store_const",
                        const="window", default="none",
                        help="stretch each image's 1st-99th percentile grey levels to 0-255 "
                             "before embedding (for dark medical exports with few grey levels)")
    parser.add_argument("--decode", choices=("auto", "cpu", "device"), default="cpu",
                        help="where JPEGs are decoded and resized: cpu (PIL, in the decoding "
                             "processes), device (in batches on the model's device, nvJPEG on "
                             "CUDA) or auto (device on CUDA, else cpu) (default %(default)s)")


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser, source_help="image folder (one subfolder per class) or "
                         "CSV/Parquet manifest (path,label[,group], paths relative to it)")
    parser.add_argument("--out", metavar="DIR", default="clipsei_embeddings",
                        help="output folder (default: %(default)s)")


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser, source_help="a folder with one subfolder per class, or a "
                         "manifest (CSV/Parquet)")
    parser.add_argument("--prompts", default="generic",
                        help="prompt set: generic, chest_xray, dermoscopy, fundus, histology, "
                             "mri, or a .json/.yaml file of your own")
    parser.add_argument("--out", required=True, metavar="DIR", help="where results are written")
    parser.add_argument("--method", help="detector method (default: the engine's)")
    parser.add_argument("--n-epochs", type=positive_int, help="epochs of head training")
    parser.add_argument("--random-state", type=non_negative_int, default=0)
    parser.add_argument("--captions", action="store_true",
                        help="PATH is a caption manifest (path,caption): flag image-caption "
                             "pairs that disagree, instead of label errors")
    parser.add_argument("--n-neighbors", type=positive_int, default=10,
                        help="neighbours per modality with --captions (default %(default)s)")
    parser.add_argument("--cutoff", choices=("count", "calibrated"), default=None,
                        help="flag rule of the default: 'count' (default: at least confident "
                             "learning's count) or 'calibrated' (the expected-F1 count of "
                             "calibrated probabilities, no floor; for curated sets with few "
                             "errors)")
    parser.add_argument("--precision", dest="target_precision", type=float, metavar="P",
                        help="flag as many as keep the expected precision >= P (e.g. 0.9)")
    parser.add_argument("--review-budget", dest="max_flags", type=non_negative_int,
                        metavar="N",
                        help="flag the N likeliest errors (at most N with --precision)")
    parser.add_argument("--trusted", metavar="MANIFEST.csv", default=None,
                        help="CSV with a path column (and optionally the verified label): "
                             "verified images, never flagged; 10 or more calibrate the count")
    parser.add_argument("--audit-sample", type=non_negative_int, metavar="N", default=None,
                        help="also write audit.csv: N images to verify, drawn by rank where "
                             "the flag count is decided; filled in, pass it as --trusted")


def add_relabel_arguments(parser: argparse.ArgumentParser) -> None:
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


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from .demo import DEMO_FEATURES

    parser.add_argument("--out", default="demo_out", metavar="DIR",
                        help="where the images and the scan go (default ./demo_out)")
    parser.add_argument("--features", choices=DEMO_FEATURES, default="pixels",
                        help="pixels (default; finds the errors) or clipsei-tiny (the bundled "
                             "CLIP model with random weights; shows the image pipeline)")
    parser.add_argument("--noise-rate", type=float, default=0.1, help="share of wrong labels")
    parser.add_argument("--random-state", type=non_negative_int, default=0)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan_dir", metavar="DIR", help="output folder of clipsei scan")
    parser.add_argument("--fiftyone", required=True, metavar="NAME",
                        help="build a persistent FiftyOne dataset NAME (pip install "
                             "'clipsei[fiftyone]'); open it with fiftyone.load_dataset(NAME)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing FiftyOne dataset of that name")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH.npz",
                        help="features (N, D), labels (N,) and optional true_labels, "
                             "class_names, text_features")
    parser.add_argument("--noise", choices=("symmetric", "asymmetric", "confusion"), default=None,
                        help="noise to inject into clean labels (files without true_labels; "
                             "default symmetric)")
    parser.add_argument("--rate", type=float, default=0.2, help="injected noise rate (default 0.2)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the noise and the methods")
    parser.add_argument("--mapping", default=None, metavar="JSON",
                        help='asymmetric mapping {"from": "to"} by class index or name '
                             "(default c -> c+1 mod K)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of clipsei,sei_paper,aum,entropy_integral,"
                             "cleanlab,knn and, with text_features or --model, zero_shot and "
                             "sei_prompt (default all)")
    parser.add_argument("--model", default=None,
                        help="open_clip model whose text side to use (name, hf-hub:org/repo or "
                             "local-dir:PATH): encodes class_names' prompts where the file has "
                             "no text_features and runs sei_prompt (default: none)")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k",
                        help="weights of --model: tag, checkpoint file or 'none' "
                             "(default %(default)s)")
    parser.add_argument("--prompts", default="generic",
                        help="prompt set of --model's class prompts (default %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (--model)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the result as JSON")


def resolve_cache(args) -> None:
    """``args.cache`` of embed and scan: ``OUT/cache`` unless given or ``--no-cache``, so that
    a killed run keeps what it encoded."""
    if getattr(args, "cache", "absent") is None and not args.no_cache:
        args.cache = str(Path(args.out) / "cache")
    elif getattr(args, "no_cache", False) and args.cache is not None:
        raise ValueError("give --cache DIR or --no-cache, not both")
