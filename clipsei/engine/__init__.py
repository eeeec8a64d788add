"""The scoring engine: embeddings + labels -> signals -> flags, one module per stage.

features (unit rows, standardising) -> heads (cosine heads, training dynamics) -> dynamics
(per-sample scores) -> neighbors (FAISS search, votes, duplicates) -> threshold
(threshold-sample runs) -> noise_model (confident learning, Bayes error probabilities) ->
heldout (cross-fitted rounds) -> fusion (percentile fusion, repeat averaging) -> flagging
(counts, cutoffs) -> class_signal (do the embeddings carry the labels?) -> table -> detect
(the orchestrator and the method registry).
"""
