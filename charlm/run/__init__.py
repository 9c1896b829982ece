"""A run directory: every file in it (rundir), and loading a trained run back (load)."""
