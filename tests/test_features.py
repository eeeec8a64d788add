"""Feature rows: memory-mapped float16 embeddings scored without a full float32 copy."""

import tracemalloc

import numpy as np
import pandas as pd
import pytest

import clipsei.engine.features as features_module
from clipsei import LabelIssueDetector
from clipsei.engine.features import FeatureRows, check_embedding_rows, column_moments
from clipsei.engine.neighbors import find_neighbors


def _float16_file(tmp_path, embeddings):
    path = tmp_path / "embeddings.npy"
    np.save(path, embeddings.astype(np.float16))
    return np.load(path, mmap_mode="r")


def test_rows_converted_per_block_equal_the_rows_kept_in_memory(rng):
    source = rng.normal(size=(300, 16)).astype(np.float16)
    mean, spread = column_moments(source)
    dense = FeatureRows(source, mean, spread)
    lazy = FeatureRows(source, mean, spread, max_dense_bytes=0)
    assert dense.dense is not None and lazy.dense is None
    index = rng.permutation(300)[:50]
    np.testing.assert_array_equal(lazy.rows(index), dense.rows(index))
    np.testing.assert_array_equal(np.vstack([b for _, b in lazy.blocks(64)]), dense.dense)
    np.testing.assert_allclose(np.linalg.norm(dense.dense, axis=1), 1.0, rtol=1e-6)
    x = source.astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(spread, x.std(axis=0), rtol=1e-5)


def test_memory_map_gives_the_same_table_as_the_array_in_memory(blobs, tmp_path, monkeypatch):
    mapped = _float16_file(tmp_path, blobs.embeddings)
    in_memory = LabelIssueDetector(random_state=0).fit(np.array(mapped), blobs.labels).issues_
    monkeypatch.setattr(features_module, "DENSE_MAX_BYTES", 0)  # rows converted per batch
    from_map = LabelIssueDetector(random_state=0).fit(mapped, blobs.labels).issues_
    pd.testing.assert_frame_equal(from_map, in_memory)
    as_float32 = LabelIssueDetector(random_state=0).fit(np.asarray(mapped, np.float32),
                                                        blobs.labels).issues_
    pd.testing.assert_frame_equal(as_float32, in_memory)
    assert from_map["is_label_issue"][blobs.is_flipped].mean() > 0.8


def test_memory_map_is_never_copied_whole_at_float32(rng, tmp_path, monkeypatch):
    embeddings = rng.normal(size=(16000, 256))
    embeddings[:, 0] += 3 * (np.arange(16000) % 4)
    mapped = _float16_file(tmp_path, embeddings)
    labels = np.arange(16000) % 4
    monkeypatch.setattr(features_module, "DENSE_MAX_BYTES", 0)
    monkeypatch.setattr(features_module, "BLOCK_ROWS", 1024)
    LabelIssueDetector(random_state=0, n_epochs=2).fit(mapped[:400], labels[:400])  # imports
    tracemalloc.start()
    try:
        LabelIssueDetector(random_state=0, n_epochs=2).fit(mapped, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one float32 copy is 16.4 MB; the temperature search takes a 4000-row subset of it
    assert peak < embeddings.size * 4


def test_neighbours_of_feature_rows_equal_those_of_the_array(rng):
    source = rng.normal(size=(500, 8)).astype(np.float32)
    expected = find_neighbors(source, n_neighbors=5)
    found = find_neighbors(FeatureRows(source, max_dense_bytes=0), n_neighbors=5)
    np.testing.assert_array_equal(found[0], expected[0])
    np.testing.assert_allclose(found[1], expected[1], rtol=1e-6)


@pytest.mark.parametrize("value, message", [(np.nan, "must be finite; rows \\[130\\]"),
                                            (0.0, "non-zero rows; rows \\[130\\]")])
def test_bad_rows_are_named_across_blocks(rng, value, message, monkeypatch):
    monkeypatch.setattr(features_module, "BLOCK_ROWS", 64)
    embeddings = rng.normal(size=(200, 4)).astype(np.float16)
    embeddings[130] = value
    with pytest.raises(ValueError, match=message):
        check_embedding_rows(embeddings)


def test_other_dtypes_are_converted_to_float32(rng):
    embeddings = rng.normal(size=(20, 4))
    checked = check_embedding_rows(embeddings)
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    mapped = embeddings.astype(np.float16)
    assert check_embedding_rows(mapped) is mapped
