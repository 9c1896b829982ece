"""What runs around each training step: progress and stop requests (Ctrl-C, SIGTERM,
the time budget, a non-finite loss), and the learning rate annealed over the time budget."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time

import keras

from charlm.errors import INTERRUPTED
from charlm.model.build import reset_recurrent_states
from charlm.training.optimizer import base_optimizer, time_annealed_rate


class StopRequest:
    """Set by SIGINT/SIGTERM, the time budget or early stopping; read at step boundaries."""

    def __init__(self, exit_on_second_interrupt: bool = False):
        self.reason: str | None = None
        self.exit_on_second_interrupt = exit_on_second_interrupt

    def handle_signal(self, signum, frame):
        if self.reason == "interrupted" and signum == signal.SIGINT:  # a second Ctrl-C
            if self.exit_on_second_interrupt:
                return leave_now()
            # A library call never ends the process (a notebook's kernel would die with
            # it): the interrupt goes to the caller, and what was saved stays saved.
            raise KeyboardInterrupt
        self.reason = "interrupted"


def leave_now():
    """Exit at once with code 130. Not by raising KeyboardInterrupt: code that catches
    everything could swallow it and go on (Keras's saving does, while it opens its
    weights file), and a save would then run to its end. A save cut short leaves only its
    temporary file, removed at the next start; the last complete checkpoint stays."""
    if sys.stderr.isatty():
        sys.stderr.write("\x1b[?25h")  # the progress bar hides the cursor: show it again
    sys.stderr.write("\ncharlm: interrupted\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(INTERRUPTED)


class signal_handlers:
    """SIGINT and SIGTERM request a stop at the next step boundary (main thread only)."""

    def __init__(self, stop: StopRequest):
        self.stop = stop
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.stop.handle_signal)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class StepMonitor(keras.callbacks.Callback):
    """Per step: progress, non-finite loss, stop requests and the time budget."""

    def __init__(self, run, first_step: int, stop_mid_segment: bool = True):
        super().__init__()
        self.run = run
        self.step = first_step
        # Workers of a multi-worker run must stop at the same step: they agree at the end
        # of each segment instead (see agree_to_stop).
        self.stop_mid_segment = stop_mid_segment
        self.started = time.perf_counter()
        self.segment_loss = math.nan

    def on_train_batch_begin(self, batch, logs=None):
        # Contiguous training: at each new pass every row starts again from the top of its part.
        if self.run.steps_per_pass and self.step % self.run.steps_per_pass == 0:
            reset_recurrent_states(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = float(logs["loss"])  # the mean over this segment so far
        if not math.isfinite(loss):
            self.run.nonfinite_step = self.step
            self.model.stop_training = True
            return
        self.segment_loss = loss
        chars = (batch + 1) * self.run.chars_per_step
        # The segment's training speed so far (its model.fit alone: no evaluation).
        self.run.train_chars_per_s = chars / (time.perf_counter() - self.started)
        self.run.reporter.advance(self.step, loss, self.run.train_chars_per_s)
        if self.run.over_budget():
            self.run.stop.reason = self.run.stop.reason or "time budget"
        if self.run.stop.reason and self.stop_mid_segment:
            self.model.stop_training = True


class TimeAnnealedLearningRate(keras.callbacks.Callback):
    """train.anneal_over: time_budget. Sets the learning rate before every step from the
    share of the time budget used, so the cosine ends at the budget whatever the
    machine's speed; a step-based schedule tuned on one machine is cut short on a slower
    one (its rate still high) and wastes the end of the budget on a faster one."""

    def __init__(self, run, first_step: int):
        super().__init__()
        self.run = run
        self.step = first_step

    def on_train_batch_begin(self, batch, logs=None):
        base_optimizer(self.model).learning_rate = time_annealed_rate(
            self.run.config.train, self.step + batch, self.run.elapsed()
        )
