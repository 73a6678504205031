"""Privacy-risk evaluation at split points (He, Zhang & Lee, "Model inversion attacks against collaborative
inference", ACSAC 2019): attacks on intermediate features, defences at the split, leakage figures.

``config`` (PrivacyConfig, the one parameter list; ``from_config`` draws its images and runs any command) →
``splits`` (images from ``upconv.data``) → ``stages`` (victim, clean inverse networks, shadow) → ``points``
(each point of the sweep: ``point_training`` trains what a defended point needs, its retrained victim and its
adaptive attackers; ``leakage`` scores every attack on it; ``bounds`` puts the Fisher-information bound of
``fisher`` beside a noise point) → ``run`` (the whole run) → ``report`` (the run folder). ``frontier`` and
``budget`` read or extend that run; all three return one ``result.PrivacyResult``. ``sweep`` is the vocabulary
they share, declared once: attacks, attackers (clean, adaptive), leakage figures, defences, and the typed keys
``Point`` and ``AttackerKey``. Defences come in two kinds: ``inference_defenses`` are applied to the features
at inference (noise, quantisation, dropout, top-k) and ``training_defenses`` are trained into the victim
(NoPeek, adversarial training). Every trained part and point is a resumable unit of the run folder
(``resume``: units and the networks they hold)."""
