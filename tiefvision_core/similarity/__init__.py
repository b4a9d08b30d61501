"""How alike two crops are: unsupervised mean cosine, Deep Ranking on triplets, its training
runs, retrieval metrics.

Public names are re-exported here and imported on first use (PEP 562): importing
one stage's package must not load the heavy dependencies of its other modules
(a search by id never imports torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiefvision_core._lazy import lazy_exports

if TYPE_CHECKING:
    from tiefvision_core.similarity.deep_ranking import (  # noqa: F401
        DeepRankingConfig,
        EpochReport,
        HeldOutFit,
        ProjectionNet,
        TrainedProjection,
        fit_held_out,
        held_out_split,
        hinge_loss,
        make_triplets,
        mine_negatives,
        split_products,
        train_projection,
        triplet_accuracy,
    )
    from tiefvision_core.similarity.retrieval import (  # noqa: F401
        RetrievalScores,
        ranked_neighbours,
        retrieval_scores,
    )
    from tiefvision_core.similarity.training import (  # noqa: F401
        SimilarityRun,
        fit_similarity,
        load_projection,
        projected_maps,
    )
    from tiefvision_core.similarity.unsupervised import (  # noqa: F401
        SIMILARITY_GRID,
        global_pool_vectors,
        mean_cosine,
        similarity_grid,
        similarity_vectors,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "DeepRankingConfig": "deep_ranking",
    "EpochReport": "deep_ranking",
    "HeldOutFit": "deep_ranking",
    "ProjectionNet": "deep_ranking",
    "RetrievalScores": "retrieval",
    "SIMILARITY_GRID": "unsupervised",
    "SimilarityRun": "training",
    "TrainedProjection": "deep_ranking",
    "fit_held_out": "deep_ranking",
    "fit_similarity": "training",
    "global_pool_vectors": "unsupervised",
    "held_out_split": "deep_ranking",
    "hinge_loss": "deep_ranking",
    "load_projection": "training",
    "make_triplets": "deep_ranking",
    "mean_cosine": "unsupervised",
    "mine_negatives": "deep_ranking",
    "projected_maps": "training",
    "ranked_neighbours": "retrieval",
    "retrieval_scores": "retrieval",
    "similarity_grid": "unsupervised",
    "similarity_vectors": "unsupervised",
    "split_products": "deep_ranking",
    "train_projection": "deep_ranking",
    "triplet_accuracy": "deep_ranking",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
