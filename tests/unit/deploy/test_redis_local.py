"""`make serve HA=1`'s Redis password file, without starting Redis or Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raylane.deploy.ray_start import PASSWORD_FILE_ENV
from raylane.deploy.redis_local import RedisError, password_from


def test_a_missing_file_gets_a_random_password_only_its_owner_reads(tmp_path):
    path = tmp_path / "redis" / "password"
    first = password_from(path, create=True)
    assert len(first) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert password_from(path, create=False) == first
    assert password_from(tmp_path / "other", create=True) != first


def test_a_file_others_can_read_is_refused_naming_the_file_and_the_mode(tmp_path):
    path = tmp_path / "password"
    path.write_text("s3cret\n")
    path.chmod(0o644)
    with pytest.raises(RedisError, match=r"password file .*password: mode 644, expected 600"):
        password_from(path, create=False)


@pytest.mark.parametrize("text", ["", "two words", 'quo"te'])
def test_a_password_redis_config_cannot_hold_is_refused(tmp_path, text):
    path = tmp_path / "password"
    path.touch(mode=0o600)
    path.write_text(text)
    with pytest.raises(RedisError, match="expected one word"):
        password_from(path, create=False)


def test_missing_file_without_create_says_so(tmp_path):
    with pytest.raises(RedisError, match="not found"):
        password_from(tmp_path / "nope", create=False)


def test_ray_start_wrapper_needs_the_password_file_named():
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_FILE_ENV}
    out = subprocess.run([sys.executable, "-m", "raylane.deploy.ray_start", "--head"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and PASSWORD_FILE_ENV in out.stderr
