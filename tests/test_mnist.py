"""The IDX reader accepts real-format files and refuses each kind of corruption with a clear error."""

import gzip

import numpy as np
import pytest

from pipeline.lib.mnist import IdxError, load_digits, parse_idx, read_idx

from idx_writer import encode_idx, write_idx_gz


def test_round_trip_keeps_shape_and_bytes(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx_gz(tmp_path / "x.gz", images)
    assert np.array_equal(read_idx(tmp_path / "x.gz", dimensions=3), images)


def test_header_is_big_endian_idx():
    assert encode_idx(np.zeros((2, 28, 28), np.uint8))[:16] == bytes.fromhex("00000803000000020000001c0000001c")


def test_wrong_magic_names_both_values():
    raw = encode_idx(np.zeros(3, np.uint8))
    with pytest.raises(IdxError, match="magic 0x00000801, expected 0x00000803"):
        parse_idx(raw, dimensions=3)


def test_missing_bytes_are_reported():
    raw = encode_idx(np.zeros((2, 28, 28), np.uint8))[:-10]
    with pytest.raises(IdxError, match=r"declares shape \(2, 28, 28\).*holds 1558 bytes"):
        parse_idx(raw, dimensions=3)


def test_truncated_gzip_is_refused(tmp_path):
    data = gzip.compress(encode_idx(np.zeros((50, 28, 28), np.uint8)))
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(IdxError, match="not a complete gzip file"):
        read_idx(tmp_path / "x.gz", dimensions=3)


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"")
    with pytest.raises(IdxError, match="too short for an IDX header"):
        read_idx(tmp_path / "x.gz", dimensions=3)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8), "4 images but its labels file 3 labels"),
        (np.zeros((2, 28, 28), np.uint8), np.array([3, 10], np.uint8), "label 10, outside 0-9"),
        (np.zeros((2, 32, 32), np.uint8), np.zeros(2, np.uint8), "32x32 images, expected 28x28"),
    ],
)
def test_inconsistent_image_and_label_files_are_refused(tmp_path, images, labels, message):
    write_idx_gz(tmp_path / "i.gz", images)
    write_idx_gz(tmp_path / "l.gz", labels)
    with pytest.raises(IdxError, match=message):
        load_digits(tmp_path / "i.gz", tmp_path / "l.gz")


def test_plain_idx_is_read_like_gzipped(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    (tmp_path / "x-idx3-ubyte").write_bytes(encode_idx(images))
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte", dimensions=3), images)
