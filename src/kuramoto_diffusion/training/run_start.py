"""Starting a fresh run: its folder claimed (one writer, no checkpoints yet, writable, room for two checkpoints),
and no partial output left behind when the start fails on any process."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..runtime import DistributedContext
from .checkpointing import check_new_run_folder
from .run_lock import NoLock, RunFolderBusy, RunLock


@contextmanager
def new_run_folder(
    run_dir: Path, lock: RunLock | NoLock, context: DistributedContext, checkpoint_bytes: Callable[[], int]
) -> Iterator[None]:
    """Inside: a fresh run's set-up, with ``run_dir`` claimed by the main process: ``lock`` taken (it creates the
    folder; a second writer stops here) and ``check_new_run_folder`` passed for checkpoints of about
    ``checkpoint_bytes()`` bytes.

    If the set-up fails on this process, the lock is released and a folder created here is removed again; if it
    failed on another, this one raises too (a collective: every process must enter and leave together).
    """
    created = not run_dir.exists()
    main = context.is_main
    try:
        if main:
            lock.acquire()
            check_new_run_folder(run_dir, checkpoint_bytes())
        yield
    except BaseException as error:
        busy = isinstance(error, RunFolderBusy)  # the folder is another writer's: leave it alone
        lock.release()
        if created and main and not busy:
            shutil.rmtree(run_dir, ignore_errors=True)
        context.all_succeeded(False)
        raise
    if not context.all_succeeded(True):
        raise UserError("another process of the distributed run failed to start (its message is above)")
