"""Privacy-risk evaluation at split points (He, Zhang & Lee, "Model inversion attacks against collaborative
inference", ACSAC 2019): attacks on intermediate features, defences at the split, leakage figures.

``config`` (PrivacyConfig, the one parameter list) → ``splits`` (images from ``upconv.data``) → ``stages``
(victim, inverse networks, shadow) → ``leakage`` (attacks on clean and defended features) → ``run`` (the
whole run) → ``report`` (the run folder); ``result`` holds what a run returns."""
