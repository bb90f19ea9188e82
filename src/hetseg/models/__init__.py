"""Plain nn.Modules (no training code): classifier, saliency, bridge, decoder, full models."""
