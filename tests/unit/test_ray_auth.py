"""raylane/ray_auth.py: the cluster token, found where Ray's own clients look."""

from __future__ import annotations

from raylane.ray_auth import auth_headers, ray_token


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
