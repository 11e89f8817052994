"""Plots of runs and of what the methods learn: training curves, per-type scores of several runs,
entity-type confusion, labelled heatmaps and 2-D embeddings (colour = language, marker = type).

The data functions (``read_log``, ``training_curves``, ``load_results``, ``per_type_table``,
``compare_markdown``, ``entity_confusion``) need only numpy; the ``plot_*`` functions and
``embed_2d`` need matplotlib (``pip install "mclner[viz]"``), t-SNE also scikit-learn (else PCA).
What a checkpoint learned (entity representations, relation-similarity of the contrastive views, the
confusion of its predictions) is computed by ``mclner.viz.model``; ``mclner.viz.report`` writes a run's
``report.md``.
"""

from mclner.viz.confusion import OUTSIDE, EntityConfusion, entity_confusion
from mclner.viz.plots import (
    MatrixPanel,
    PlotResult,
    describe_axes,
    embed_2d,
    plot_confusion,
    plot_embedding,
    plot_matrices,
    plot_matrix,
    plot_per_type,
    plot_training_curves,
)
from mclner.viz.runs import (
    PerTypeTable,
    StageSpan,
    TrainingCurves,
    compare_markdown,
    load_results,
    per_type_table,
    read_log,
    run_names,
    scores_table,
    training_curves,
)

__all__ = ["OUTSIDE", "EntityConfusion", "PerTypeTable", "StageSpan", "TrainingCurves", "compare_markdown",
           "entity_confusion", "load_results", "per_type_table", "read_log", "run_names", "scores_table",
           "training_curves",
           "MatrixPanel", "PlotResult", "describe_axes", "embed_2d", "plot_confusion", "plot_embedding",
           "plot_matrices", "plot_matrix", "plot_per_type", "plot_training_curves"]
