"""Training: the loop (loop.py) and what it rests on: callbacks, optimizer and schedules,
checks before any work, devices and precision, distribution, Keras compatibility."""
