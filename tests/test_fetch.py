"""The real download path against loopback HTTP servers and folders."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from pipeline.lib.errors import PipelineError
from pipeline.lib.fetch import PUBLIC_MIRRORS, fetch_all, mirrors_from_environment

from conftest import serve_folder, write_raw


@pytest.fixture
def serve():
    """Start loopback HTTP servers over folders; yields a function returning each one's URL."""
    with ExitStack() as servers:
        yield lambda folder: servers.enter_context(serve_folder(folder))


def test_bad_checksum_mirror_is_skipped_for_the_next(tmp_path, serve):
    good = write_raw(tmp_path / "good", seed=0)
    write_raw(tmp_path / "bad", seed=5)  # same names, other bytes
    out = tmp_path / "out"
    out.mkdir()
    warnings = []
    fetch_all(good, [serve(tmp_path / "bad"), serve(tmp_path / "good")], out, warnings.append)
    assert sorted(p.name for p in out.iterdir()) == sorted(good)
    assert all((out / name).read_bytes() == (tmp_path / "good" / name).read_bytes() for name in good)
    assert len(warnings) == 4 and all("does not match the official" in w for w in warnings)


def test_unreachable_and_missing_mirrors_fail_with_one_line_naming_the_variable(tmp_path, serve):
    expected = write_raw(tmp_path / "good")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    warnings = []
    mirrors = [serve(empty), "http://127.0.0.1:9/", str(tmp_path / "nowhere")]
    with pytest.raises(PipelineError, match="set MNIST_MIRROR") as failure:
        fetch_all(expected, mirrors, out, warnings.append)
    assert "\n" not in str(failure.value)
    assert len(warnings) == 3
    assert list(out.iterdir()) == []  # no partial or unverified file is left


def test_folder_mirror(tmp_path):
    expected = write_raw(tmp_path / "mirror")
    out = tmp_path / "out"
    out.mkdir()
    fetch_all(expected, [str(tmp_path / "mirror")], out, pytest.fail)
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)


def test_environment_mirrors_come_first_then_public_ones():
    assert mirrors_from_environment(" /a , http://b/ ") == ["/a", "http://b/", *PUBLIC_MIRRORS]
    assert mirrors_from_environment(None) == list(PUBLIC_MIRRORS)
