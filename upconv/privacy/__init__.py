"""Privacy-risk evaluation at split points (He, Zhang & Lee, "Model inversion attacks against collaborative
inference", ACSAC 2019): attacks on intermediate features, defences at the split, leakage figures."""
