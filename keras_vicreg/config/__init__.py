"""The config schema of the binaries: defaults, validation, derived numbers and `runlocal`."""
