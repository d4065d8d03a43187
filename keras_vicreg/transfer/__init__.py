"""Transfer heads around a pretrained backbone (detection; see each module)."""
