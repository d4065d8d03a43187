"""The exit statuses of the training binaries, one name for each way a run ends.

The library raises typed exceptions (`keras_vicreg.training.recipe.TrainingDiverged`, `ValueError`
for an invalid config or missing data); a binary maps them to these statuses, so that a scheduler or
a script can tell a run to fix from a run to retry. `DIVERGED` equals `CRASH` (1), as it has since
the first release; a scheduler that must tell them apart reads the message on stderr.
"""

DONE = 0  # trained to the end and exported (or only exported again: the run had finished)
CRASH = 1  # an unexpected exception (Python's own status for an uncaught one)
DIVERGED = 1  # a non-finite loss or weight; the newest checkpoint, from before it, is kept
INVALID_CONFIG = 2  # an invalid config, or data that does not match it or is not there
