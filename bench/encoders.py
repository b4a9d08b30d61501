"""Do the larger EfficientNet-Lites pay for their cost? Lite0 vs Lite1 vs Lite2, same run.

    python bench/encoders.py --images ../shared/data/clothing-small
    python bench/encoders.py --images ../shared/data/grocery-packages/images \
        --labels ../shared/data/grocery-packages/products.csv

Each encoder encodes every photo whole at its canonical input (224, 240, 260 pixels) and
is scored as ``bench/clothing.py`` scores Lite0: every photo a query, the rest the gallery,
relevant = same label (clothing-small's class folder, grocery-packages' product id), in the
default unsupervised space (mean cosine on the 3×3 similarity grid) and the global-average-
pool baseline. Encoding time per photo is measured in the same process on the same photos
(model built and warmed first), with its ratio to the first encoder's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from clothing import encode_requests, photo_requests, scores_cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--labels", type=Path, help="image,product CSV (else: folder names)")
    parser.add_argument(
        "--encoders", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
    )
    args = parser.parse_args()

    import numpy as np

    from tiefvision_core.encoding.runtime import RuntimeConfig
    from tiefvision_core.similarity.unsupervised import (
        global_pool_vectors,
        similarity_grid,
        similarity_vectors,
    )

    requests, labels = photo_requests(args.images, args.labels)
    print(f"{len(requests)} photos, {len(set(labels.values()))} labels")
    header = f"{'encoder':<22}{'ms/photo':>10}{'× first':>9}{'space':>26}"
    print(header + f"{'P@1':>8}{'P@5':>8}{'mAP@10':>8}")
    first_ms = None
    for name in args.encoders.split(","):
        runtime = RuntimeConfig(encoder=name).build()
        encode_requests(runtime, requests[:8])  # warm: threads, allocator, first-batch set-up
        started = time.perf_counter()
        ids, maps = encode_requests(runtime, requests)
        ms = (time.perf_counter() - started) * 1000 / len(requests)
        runtime.close()
        first_ms = first_ms or ms
        classes = np.array([labels[i] for i in ids])
        for space, vectors in (
            ("global average pool", global_pool_vectors(maps)),
            ("3x3 grid (default)", similarity_vectors(similarity_grid(maps))),
        ):
            cells = scores_cells(vectors, classes)
            print(f"{name:<22}{ms:>10.1f}{ms / first_ms:>9.2f}{space:>26}{cells}")


if __name__ == "__main__":
    main()
