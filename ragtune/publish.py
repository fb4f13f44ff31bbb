"""Publishing an adapter folder atomically, and recovering from a publish that was killed.

The trainer assembles an adapter in a hidden ``.tmp-S-XXXX`` folder beside the adapters, then
renames it to ``S``. Replacing an existing ``S`` takes two renames (``S`` aside to ``.old-S-XXXX``,
then the new one in); a process killed between them leaves no ``S`` at all. ``recover`` runs
before adapters are discovered (service start, every training run) and puts the old version
back, so an adapter that was published is never lost and never half there. Hidden folders are
never served.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

OLD_PREFIX, STAGING_PREFIX = ".old-", ".tmp-"


def publish(staging: Path, final: Path) -> None:
    """Move a finished adapter folder to its final name by rename (same filesystem).

    An existing adapter of that name is renamed aside first, the new one renamed in, and the
    old one deleted; if the second rename fails the old one is put back.
    """
    if not final.exists():
        staging.rename(final)
        return
    old = final.with_name(f"{OLD_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
    final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _style_of(aside: Path) -> str:
    return aside.name[len(OLD_PREFIX):].rsplit("-", 1)[0]


def recover(adapters_dir: Path) -> list[str]:
    """Undo what killed publishes left: restore ``S`` from ``.old-S-*`` when ``S`` is missing,
    drop ``.old-S-*`` when ``S`` is there. Returns the styles restored."""
    adapters_dir = Path(adapters_dir)
    if not adapters_dir.is_dir():
        return []
    restored = []
    for aside in sorted(adapters_dir.glob(f"{OLD_PREFIX}*")):
        final = adapters_dir / _style_of(aside)
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)  # the publish finished; only its clean-up was cut
            continue
        aside.rename(final)
        restored.append(final.name)
        log.warning("adapter %s: a replacing publish was interrupted; the previous version is back", final.name)
    return restored


def clear_staging(adapters_dir: Path, style: str) -> None:
    """Remove the staging folders a killed run of ``style`` left (a new run of it is starting)."""
    for staging in Path(adapters_dir).glob(f"{STAGING_PREFIX}{style}-*"):
        if staging.is_dir() and staging.name[len(STAGING_PREFIX) + len(style) + 1:].isalnum():
            shutil.rmtree(staging, ignore_errors=True)
