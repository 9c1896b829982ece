"""`charlm bench`: training and sampling throughput at the reference size, measured
through the code users run, beside the machine's own limits (the matmul ceiling, one
stream's weight-reading floor) and PyTorch (when it is importable), in the same run.

    reference.py  the reference model, corpus and FLOP count
    machine.py    the CPU, its instruction set, the threads, the matmul ceiling
    training.py   charlm's training rates (fastest, median and whole-segment)
    sampling.py   charlm's sampling rates and one stream's floor
    gradient_health.py  what measuring the gradients costs a training step
    torch_reference.py  the same model, trained and sampled in PyTorch
    report.py     the run and its table
"""
