#!/usr/bin/env python3
"""Trains the zstd dictionary the journal's data is encoded with (nurture_store::encoding).

The dictionary in crates/store/src/journal-v1.dict was made with:

    cargo build --release -p nurture
    target/release/nurture bench --only storage --storage-seed 7 \\
        --storage-contacts 3000 --storage-keep /tmp/train.db
    pip install zstandard
    python3 scripts/journal-dict.py /tmp/train.db /tmp/train.compacted.db \\
        -o crates/store/src/journal-v1.dict

Seed 7 on purpose: `nurture bench` measures seed 1, so the figures it prints are of
rows the dictionary was not trained on. The kept files hold the journal before and after
compaction (summary lines). Rows already encoded (tag 0x01) are decoded with --dict first.

Never replace journal-v1.dict: rows written with it are read with it. A new dictionary
gets a new file and a new tag in encoding.rs.
"""
import argparse
import random
import sqlite3

import zstandard


def rows(path, dict_v1):
    dctx = zstandard.ZstdDecompressor(dict_data=dict_v1) if dict_v1 else None
    with sqlite3.connect(path) as db:
        for (data,) in db.execute("SELECT data FROM journal"):
            if isinstance(data, str):
                yield data.encode()
            elif data[:1] == b"\x01" and dctx:
                yield dctx.decompress(data[1:])
            elif data[:1] != b"\x01":
                yield bytes(data)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stores", nargs="+", help="SQLite stores (from --storage-keep)")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--size", type=int, default=32768)
    p.add_argument("--dict", help="the current dictionary, to read encoded rows")
    a = p.parse_args()
    d1 = None
    if a.dict:
        d1 = zstandard.ZstdCompressionDict(open(a.dict, "rb").read())
    samples = [r for s in a.stores for r in rows(s, d1)]
    random.Random(1).shuffle(samples)
    trained = zstandard.train_dictionary(a.size, samples, level=9, threads=-1)
    with open(a.out, "wb") as f:
        f.write(trained.as_bytes())
    raw = sum(map(len, samples))
    cctx = zstandard.ZstdCompressor(level=3, dict_data=trained, write_dict_id=False)
    packed = sum(len(cctx.compress(s)) + 1 for s in samples)
    print(f"{len(samples)} rows, {raw} bytes of JSON -> {packed} encoded "
          f"({raw / packed:.1f}x); dictionary {len(trained.as_bytes())} bytes -> {a.out}")


if __name__ == "__main__":
    main()
