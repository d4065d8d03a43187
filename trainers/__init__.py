"""Command-line programs (absl flags): parse, build from a config file, run."""
