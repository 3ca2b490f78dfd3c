"""Backbones shared by the quality models: ImageNet EfficientNet-Lite0 (lite variants) and the ResNet-50 trunk (paper variants)."""
