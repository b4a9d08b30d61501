"""What spans the stages: which training stages a full pipeline run can do (``stages``), the
nightly reindex's plan and summary (``reindex``), and garbage collection over every stage's
outputs on storage (``gc``). Above every stage package; the flows compose the stages
themselves. Import the modules themselves: this package re-exports nothing."""
