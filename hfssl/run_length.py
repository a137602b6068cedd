"""How far a run of the shared loop (:func:`hfssl.train.fit`) is towards its end: a step limit and, with
``--max_train_minutes``, a budget of training seconds (Cramming's budget-aware schedule lays the learning rate over it).
"""

from __future__ import annotations

import math
import time

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast

clock = time.monotonic  # the training clock of --max_train_minutes (seconds); tests replace it with a fake one


class RunLength:
    """Where a run stands against its end: a step limit (``--max_steps``, else the steps of ``--num_epochs``;
    with a budget only ``--max_steps``, or none) and, with ``--max_train_minutes``, a budget of training seconds.

    Training seconds are measured by :data:`clock` from the loop's start to each optimizer step's end, without
    evaluations and checkpoint writes (:meth:`start` restarts the clock after them), and continue the seconds a
    resumed checkpoint stored. With several processes the main process's count is broadcast at each step, so
    every process sets the same learning rate and stops at the same step.
    """

    def __init__(self, args, steps_per_epoch: int, accelerator: Accelerator):  # args: hfssl.train.TrainArgs
        self.budget = None if args.max_train_minutes is None else 60.0 * args.max_train_minutes
        epochs = math.ceil(args.num_epochs * steps_per_epoch) if self.budget is None else None
        self.steps = args.max_steps if args.max_steps > 0 else epochs
        self.accelerator, self.seconds, self.mark = accelerator, 0.0, 0.0

    def start(self) -> None:
        """(Re)start the clock: at the loop's start and after an evaluation or a checkpoint write."""
        self.mark = clock()

    def tick(self) -> float:
        """Add the seconds since the last mark; returns the training seconds so far."""
        now = clock()
        self.seconds, self.mark = self.seconds + (now - self.mark), now
        if self.budget is not None and self.accelerator.num_processes > 1:
            seconds = torch.tensor([self.seconds], dtype=torch.float64, device=self.accelerator.device)
            self.seconds = float(broadcast(seconds, from_process=0)[0])
        return self.seconds

    def progress(self, step: int) -> float:
        """The fraction of the run done: of the budget, or of --max_steps when that is further along."""
        done = 0.0 if self.steps is None else step / self.steps
        if self.budget is not None:
            done = max(done, self.seconds / self.budget)
        return min(done, 1.0)

    def finished(self, step: int) -> bool:
        return (self.steps is not None and step >= self.steps) or \
            (self.budget is not None and self.seconds >= self.budget)

    def may_reach(self, step: int) -> bool:
        return self.steps is None or step < self.steps

    def hook_total(self, step: int) -> float:
        """``total`` for ``on_step_end``: the step limit, or with a budget the projected step count at which the
        run ends (``step / progress``), so that ``step / total`` follows the clock too (momentum schedules)."""
        if self.budget is None:
            return self.steps
        done = self.progress(step)
        return step / done if done > 0 else math.inf
