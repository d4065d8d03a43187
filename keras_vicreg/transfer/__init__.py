"""Dense transfer around a pretrained backbone in Keras: keras-hub's RetinaNet (`detection`,
`detection_run`, scored by `average_precision`) and DeepLabV3+ (`segmentation`), both reading the
backbone's stages through `pyramid.pyramid_encoder`."""
