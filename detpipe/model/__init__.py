"""The network: layers, backbones, the detector, its weights files, pretrained starts, device choice."""
