"""The write lock of a connection: FIFO, and free of allocations until contended."""

from __future__ import annotations

import trio


class WriteLock:
    """A FIFO lock like ``trio.StrictFIFOLock`` whose parking lot exists only once a
    writer had to wait: most connections never contend, and thousands of idle ones
    should not each carry one (0.24 KiB per idle connection: benchmarks/ABLATION.md)."""

    __slots__ = ("_held", "_lot")

    def __init__(self) -> None:
        self._held = False
        self._lot: trio.lowlevel.ParkingLot | None = None

    def locked(self) -> bool:
        return self._held

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._held:
            self._held = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()  # release() hands the lock over: _held stays True

    def release(self) -> None:
        if self._lot:
            self._lot.unpark()
        else:
            self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
