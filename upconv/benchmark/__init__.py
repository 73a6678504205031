"""The layer-information benchmark (``upconv benchmark``): many networks, every depth, image and class
information side by side, in resumable and shardable units."""
