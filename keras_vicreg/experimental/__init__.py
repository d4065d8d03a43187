"""Experimental code: opt-in, with no promise that its interface stays."""
