"""Fixes to third-party packages, applied only around the call that needs them and only to the
versions they were written for.

A ``VersionedPatch`` asks first whether the installed package still has the defect. If it does not,
the patch is skipped with a log line (a warning when the version is not one the patch was written
for: the patch may be ready to delete). If it does and the version is one the patch was written
for, the patch is installed for the duration of the block and undone afterwards. A defect in a
version the patch was not written for is an error, not a silent patch of unknown code.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class UnverifiedPatchError(RuntimeError):
    """The installed package has the defect, but it is not a version the patch was written for."""


@dataclass(frozen=True)
class VersionedPatch:
    """A fix to ``package`` written for the versions in ``written_for``.

    ``needed`` tells whether the installed code has the defect (run unpatched); ``install`` applies
    the fix and returns a function that undoes it.
    """

    name: str
    package: str  # distribution name, as ``pip`` knows it
    written_for: frozenset[str]
    needed: Callable[[], bool]
    install: Callable[[], Callable[[], None]]
    # Held while the patch is installed: the patched module is global to the process.
    _lock: threading.RLock = field(default_factory=threading.RLock, compare=False, repr=False)

    def installed_version(self) -> str:
        return importlib.metadata.version(self.package)

    @contextlib.contextmanager
    def applied(self) -> Iterator[bool]:
        """Inside the block the fix is in place if it is needed; yields whether it was applied.

        Raises ``UnverifiedPatchError`` if the defect is present in a version not written for.
        """
        with self._lock:
            version = self.installed_version()
            known = version in self.written_for
            if not self.needed():
                level = logging.INFO if known else logging.WARNING
                log.log(level, "%s: not needed with %s %s (written for %s); not applied",
                        self.name, self.package, version, ", ".join(sorted(self.written_for)))
                yield False
                return
            if not known:
                raise UnverifiedPatchError(
                    f"{self.name}: {self.package} {version} has the defect this patch fixes, but "
                    f"the patch was written for {', '.join(sorted(self.written_for))}. Check it "
                    f"against {version} and add that version to its written_for."
                )
            undo = self.install()
            log.debug("%s: applied for %s %s", self.name, self.package, version)
            try:
                yield True
            finally:
                undo()
