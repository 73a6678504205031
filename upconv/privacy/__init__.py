"""Privacy-risk evaluation at split points (He, Zhang & Lee, "Model inversion attacks against collaborative
inference", ACSAC 2019): attacks on intermediate features, defences at the split, leakage figures.

``config`` (PrivacyConfig, the one parameter list) → ``splits`` (images from ``upconv.data``) → ``stages``
(victim, inverse networks, shadow) → ``points`` (each defence point: ``defended`` victims and adaptive
attackers, ``leakage`` of every attack, the ``bounds`` of ``fisher`` at noise points) → ``run`` (the whole
run) → ``report`` (the run folder); ``result`` holds what a run returns. Every trained part and point is a
resumable unit of the run folder (``resume``, ``saved``)."""
