"""``ray start`` with the Redis password read from a file, so it is on no command line we build.

    RAYLANE_REDIS_PASSWORD_FILE=/path/to/password python -m raylane.deploy.ray_start --head ...

Ray 2.60's ``ray start`` takes the password only as ``--redis-password``; this process reads the
file (named in the environment, which is removed before Ray's daemons inherit it) and calls
Ray's CLI in-process with the option added. Ray then hands the password to the head's own
daemons (gcs_server, the raylet's worker command) as arguments: that part is Ray's.
"""

from __future__ import annotations

import os
import sys

PASSWORD_FILE_ENV = "RAYLANE_REDIS_PASSWORD_FILE"


def main() -> int:
    path = os.environ.pop(PASSWORD_FILE_ENV, None)
    if not path:
        print(f"error: {PASSWORD_FILE_ENV} must name the Redis password file", file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as f:
        password = f.read().strip()
    if not password:
        print(f"error: {path} (the Redis password file) is empty", file=sys.stderr)
        return 2
    from ray.scripts.scripts import cli

    return cli.main(args=["start", *sys.argv[1:], f"--redis-password={password}"],
                    prog_name="ray", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
