"""raylane/ray_auth.py: the cluster token, found where Ray's own clients look."""

from __future__ import annotations

import pytest

from raylane.ray_auth import auth_headers, ensure_token, ray_token


def test_ray_token_sources(tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    assert ray_token({}, home=tmp_path) == "from-file"
    assert ray_token({"RAY_AUTH_TOKEN": " env "}, home=tmp_path) == "env"
    other = tmp_path / "t"
    other.write_text("path")
    assert ray_token({"RAY_AUTH_TOKEN_PATH": str(other)}, home=tmp_path) == "path"
    assert ray_token({}, home=tmp_path / "none") is None


def test_the_token_as_a_bearer_header(tmp_path):
    (tmp_path / "tok").write_text("abc\n")
    assert auth_headers({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}) == {
        "Authorization": "Bearer abc"}
    assert auth_headers({"RAY_AUTH_TOKEN": "xyz"}) == {"Authorization": "Bearer xyz"}
    assert auth_headers({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}) == {}


def test_ensure_token_keeps_a_token_it_finds(tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("mine\n")
    ensure_token("/bin/false", {"HOME": str(tmp_path)})  # Ray's CLI is not called
    ensure_token("/bin/false", {"HOME": str(tmp_path / "none"), "RAY_AUTH_TOKEN": "t"})
    assert (tmp_path / ".ray" / "auth_token").read_text() == "mine\n"
    assert not (tmp_path / "none").exists()


def test_ensure_token_refuses_a_token_path_without_a_token(tmp_path):
    missing = tmp_path / "cluster-token"
    with pytest.raises(RuntimeError, match=f"RAY_AUTH_TOKEN_PATH={missing} holds no token"):
        ensure_token("/bin/false", {"HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(missing)})
    assert list(tmp_path.iterdir()) == []


def test_the_token_file_is_read_in_the_given_environments_home(tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("theirs")
    assert ray_token({"HOME": str(tmp_path)}) == "theirs"
