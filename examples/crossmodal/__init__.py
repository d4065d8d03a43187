"""Cross-modal VICReg on Fashion-MNIST: images against token sequences of the same items."""
