"""unetjax: JAX/Flax NNX experiments for classification and U-Net segmentation."""
