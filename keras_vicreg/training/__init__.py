"""Training VICReg: the per-backend steps, distribution, LARS, the schedule, callbacks,
checkpoints and summaries."""
