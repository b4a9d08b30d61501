"""The CPU backends on real photos, as a user meets them: ``tiefvision encode --backend
torch`` against ``--backend onnxruntime``, whole commands in fresh processes, alternated,
on a folder of real photos whose sub-folder is the class (``../shared/data/clothing-small``
by default); then the stored encodings of both compared: largest difference, and class
retrieval (the seed's 3×3 mean-cosine space, P@1 and mAP@10) from each.

    python bench/backends.py [--images ../shared/data/clothing-small] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import commands  # bench/commands.py: processes and fresh environments

BACKENDS = ("torch", "onnxruntime")


def scores(store_url: str) -> tuple[np.ndarray, dict]:
    """Stored grid encodings (image-id order) and class retrieval from them."""
    from tiefvision_core.catalog.manifest import read_manifest
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.encoding.shards import read_encodings, vectors_as_maps
    from tiefvision_core.similarity.retrieval import score_vectors
    from tiefvision_core.similarity.unsupervised import similarity_vectors
    from tiefvision_core.storage.urls import open_store

    store = open_store(store_url)
    lite0 = get_encoder("efficientnet_lite0")
    table = read_encodings(store, lite0.name, lite0.version).sort_by("image_id")
    manifest = read_manifest(store).to_pandas().set_index("image_id")
    ids = table["image_id"].to_pylist()
    labels = np.array([manifest.loc[i, "rel_path"].split("/")[-2] for i in ids])
    maps = vectors_as_maps(table)
    return maps, score_vectors(similarity_vectors(maps), labels).as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=Path, default=commands.ROOT / "../shared/data/clothing-small"
    )
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        work = Path(tmp)
        envs = commands.Env(work, work / "cache")
        seconds: dict[str, list[float]] = {b: [] for b in BACKENDS}
        stores: dict[str, str] = {}
        for attempt in range(args.repeat + 1):  # the first round: untimed warm-up (export, layout)
            for backend in BACKENDS:
                store = (work / f"{backend}-{attempt}").as_uri()
                commands.run(commands.tv("ingest", "--images", str(args.images), "--store", store,
                                         "--json"), envs.make())  # fmt: skip
                argv = commands.tv("encode", "--store", store, "--backend", backend, "--json")
                done = commands.run(argv, envs.make())
                encoded = json.loads(done.stdout.strip().splitlines()[-1])["encoded"]
                if attempt:
                    seconds[backend].append(done.seconds)
                print(f"  {backend} round {attempt}: {encoded} photos in {done.seconds:.1f} s",
                      flush=True)  # fmt: skip
                stores[backend] = store
        maps = {}
        for backend in BACKENDS:
            maps[backend], quality = scores(stores[backend])
            rate = encoded / commands.med(seconds[backend])
            print(f"{backend}: {rate:.1f} photos/s whole command (median of {args.repeat}), "
                  f"retrieval {quality}")  # fmt: skip
        difference = float(np.abs(maps["torch"] - maps["onnxruntime"]).max())
        ratio = commands.med(seconds["torch"]) / commands.med(seconds["onnxruntime"])
        print(f"onnxruntime / torch speed: {ratio:.2f}×; largest stored difference {difference:.2e}"
              " (float16 shards)")  # fmt: skip


if __name__ == "__main__":
    main()
