"""``dog data prepare NAME --from ARCHIVE_OR_DIR --out DIR`` and ``dog data list``: the paper's seven datasets."""
from __future__ import annotations

import argparse
from pathlib import Path


def _split_list(text: str) -> tuple[str, str]:
    split, sep, path = text.partition("=")
    if not sep or not split.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected SPLIT=FILE (e.g. train=sun397_tr.txt), got {text!r}")
    return split.strip(), path.strip()


def register(sub: argparse._SubParsersAction) -> None:
    from ..io.data.prepare import DATASETS

    p = sub.add_parser("data", help="prepare the paper's benchmark datasets from your own downloads",
                       description="Datasets of the paper's seven benchmarks, from archives you downloaded "
                                   "yourself (nothing is fetched).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    epilog = "datasets and what --from expects:\n" + "\n".join(
        f"  {name}: {m.TITLE}; {m.ARCHIVE}" for name, m in DATASETS.items())
    pr = actions.add_parser(
        "prepare", help="lay a dataset out as ImageFolder splits with the official split files, plus a manifest",
        description="Read a downloaded archive (.zip, .tar, .tar.gz, .tgz) or the folder it was extracted to and "
                    "write OUT/<split>/<class>/<file> with the official splits, OUT/manifest.json (counts, classes, "
                    "differences from the official sizes, unreadable and missing files) and OUT/files.sha256 "
                    "(check with `sha256sum -c`). Unreadable images are skipped and listed, never fatal. A rerun "
                    "with the same options from the same download (the same bytes) into a prepared OUT does nothing; "
                    "another download, or one whose contents changed, is refused unless --overwrite.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("name", choices=sorted(DATASETS), help="dataset")
    pr.add_argument("--from", dest="source", required=True, metavar="ARCHIVE_OR_DIR", action="append",
                    help="the archive you downloaded, or the folder you extracted it to (or that holds the "
                         "archives); repeat for a dataset that comes in several archives")
    pr.add_argument("--out", required=True, help="output folder (empty, or a folder this command prepared)")
    pr.add_argument("--splits", default=None,
                    help="comma separated splits to write (default: every official one: train,test; caltech101: "
                         "train)")
    pr.add_argument("--partition", type=int, default=None,
                    help="sun397: which of the ten official partitions (Training_NN / Testing_NN), default 1")
    pr.add_argument("--partitions", default=None, metavar="PATH",
                    help="sun397: the official Partitions.zip (or its folder) when not inside --from")
    pr.add_argument("--split-list", dest="split_lists", type=_split_list, action="append", default=None,
                    metavar="SPLIT=FILE", help="sun397: your own split lists instead of a partition (repeat per "
                                               "split), e.g. the follow-up's 76,128 / 10,875 / 21,750 lists")
    pr.add_argument("--train-set", dest="train_set", choices=("official", "all"), default=None,
                    help="food101: official (default: train 75,750 / test 25,250) or all (every 101,000 images in "
                         "train/, no test split: the follow-up work's choice, used by `dog reproduce`'s published "
                         "protocol)")
    pr.add_argument("--workers", type=int, default=4, help="threads that decode and hash images (default 4)")
    pr.add_argument("--overwrite", action="store_true",
                    help="replace what --out holds (default: refuse a folder holding anything else, or prepared from "
                         "another download)")
    pr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    pr.set_defaults(func=run_prepare)
    ls = actions.add_parser("list", help="the seven datasets, their official split sizes and expected downloads")
    ls.set_defaults(func=run_list)


def run_prepare(args: argparse.Namespace) -> int:
    from ..io.data.prepare import prepare_dataset
    from . import check_out_dir

    out = check_out_dir(args.out)
    options = {"splits": args.splits.split(",") if args.splits else None, "partition": args.partition,
               "partitions": args.partitions, "split_lists": dict(args.split_lists) if args.split_lists else None,
               "train_set": args.train_set}
    if args.workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {args.workers}")
    m = prepare_dataset(args.name, args.source, out, overwrite=args.overwrite, workers=args.workers,
                        progress=not args.no_progress, **options)
    if m.get("reused"):
        print(f"{out}: already prepared ({out / 'manifest.json'}); nothing to do")
    for split, s in m["splits"].items():
        want = f" (official {s['expected_images']})" if s.get("expected_images") is not None else ""
        print(f"{split:>6}: {s['num_images']} images{want} in {s['num_classes']} classes -> {Path(out) / split}")
    for w in m["warnings"]:
        print(f"warning: {w}")
    print(f"manifest: {out / 'manifest.json'}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..io.data.prepare import DATASETS

    for name, m in DATASETS.items():
        sizes = ", ".join(f"{k} {v:,}" for k, v in m.__dict__.get("EXPECTED", m.__dict__.get(
            "PARTITION_EXPECTED", {})).items())
        print(f"{name:>14}  {m.TITLE:<16} {sizes:<28} from: {m.ARCHIVE}")
    return 0
