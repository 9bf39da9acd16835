"""A real PyTorch DataLoader whose worker outgrows the memory limit (run with RANK/LOCAL_RANK set,
as torchrun would): PyTorch reports "DataLoader worker (pid(s) N) exited unexpectedly" (or "is
killed by signal: Killed", by version) and the rank exits 1."""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Dataset

HOLD: list[bytearray] = []


class Greedy(Dataset[torch.Tensor]):
    """Item 3 allocates 8 MiB every 10 ms until the kernel stops the worker."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 3:
            while True:
                HOLD.append(bytearray(8 << 20))
                time.sleep(0.01)
        return torch.zeros(4)


def main() -> None:
    for batch in DataLoader(Greedy(), batch_size=1, num_workers=1):
        print("batch", batch.shape, flush=True)


if __name__ == "__main__":
    main()
