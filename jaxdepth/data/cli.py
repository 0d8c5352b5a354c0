"""`jaxdepth prepare SOURCE... --tokenizer T --out DIR`: tokenize a corpus into shards."""

from __future__ import annotations

import time

from jaxdepth.data.sources import UTF8_MODES


def add_arguments(p) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="'stdlib' or 'pydoc' (embedded), text files, directories, .jsonl[.gz|.zst|.bz2|.xz], .parquet, "
                        "datasets saved with save_to_disk; globs allowed (quote them)")
    p.add_argument("--out", required=True, help="directory for the shards and manifest.json")
    p.add_argument("--tokenizer", default="byte",
                   help="byte | bpe:<vocab> (trained on the train split) | a tokenizer.json or "
                        "a Hugging Face tokenizer directory (default: byte)")
    p.add_argument("--text-field", default="text", help="JSONL/Parquet/datasets text field")
    p.add_argument("--val-source", action="append", default=[], metavar="SOURCE",
                   help="hold these out as validation (e.g. C4's validation split) instead of "
                        "a hash of each document (repeatable)")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="fraction of documents held out by hash (default 0.05)")
    p.add_argument("--workers", type=int, default=None,
                   help="tokenizing processes (default: this machine's cores; 0: in this process)")
    p.add_argument("--shard-mb", type=float, default=16.0, help="text per shard, MB (default 16)")
    p.add_argument("--utf8", choices=UTF8_MODES, default="replace",
                   help="invalid UTF-8: replace (counted in the manifest) or strict (an error)")
    for name in ("eos", "bos"):
        g = p.add_mutually_exclusive_group()
        g.add_argument(f"--{name}-token", help=f"{name.upper()} token (default: from the "
                                               "tokenizer's files)")
        g.add_argument(f"--{name}-id", type=int, help=f"{name.upper()} id")
    p.add_argument("--overwrite", action="store_true",
                   help="replace another preparation found in --out")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from jaxdepth.data.prepare import prepare
    from jaxdepth.errors import UserError
    from jaxdepth.tables import table

    if args.shard_mb <= 0:
        raise UserError(f"--shard-mb must be positive, got {args.shard_mb}")
    t0 = time.time()
    m = prepare(args.sources, args.out, tokenizer=args.tokenizer, text_field=args.text_field,
                val_sources=args.val_source, val_fraction=args.val_fraction,
                workers=args.workers, shard_bytes=max(int(args.shard_mb * 2**20), 1),
                utf8=args.utf8, eos=_either(args.eos_token, args.eos_id),
                bos=_either(args.bos_token, args.bos_id),
                progress=False if args.no_progress else None, overwrite=args.overwrite)
    dt = time.time() - t0
    tok, tot, text = m["tokenizer"], m["totals"], m["text"]
    rows = [dict(split=s, **t, shards=sum(x["split"] == s for x in m["shards"]))
            for s, t in tot.items()]
    print(table(rows, ["split", "docs", "tokens", "bytes", "bytes_per_token", "shards"],
                specs={"bytes_per_token": ".3f"}, style="text",
                headers={"bytes": "text bytes", "bytes_per_token": "bytes/token"}))
    n = sum(t["tokens"] for t in tot.values())
    print(f"tokenizer {tok['spec']} ({tok['identity']}), vocab {tok['vocab_size']}, "
          f"EOS {tok['eos_id']}, BOS {tok['bos_id']}; {m['dtype']} shards in {args.out}")
    print(f"invalid UTF-8: {text['replacements']} replacements in {text['replaced_docs']} "
          f"documents ({text['utf8']}); {text['skipped_files']} files skipped (binary, or stdlib "
          "files that are not UTF-8)")
    print(f"{n} tokens in {dt:.1f} s ({n / max(dt, 1e-9):,.0f} tokens/s); train on it with "
          f"data.source={args.out} data.tokenizer={tok['spec']}")
    return 0


def _either(token, id_):
    return id_ if id_ is not None else token
