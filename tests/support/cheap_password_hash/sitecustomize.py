"""Imported at start-up by the test MLflow servers with basic auth (on their PYTHONPATH only).

MLflow's auth store hashes passwords with Werkzeug's default, scrypt, and checks the hash on
every request: 0.14-0.18 s of CPU each on a 2-core machine, minutes over the suite. Test servers
store one-iteration PBKDF2 hashes instead (as Django's docs advise for test settings); the check
each request goes through is the same code, only cheaper.
"""

import functools

import werkzeug.security

werkzeug.security.generate_password_hash = functools.partial(
    werkzeug.security.generate_password_hash, method="pbkdf2:sha256:1")
