"""depth_conv: single-channel depth maps aligned by a small CNN (the in-tree example of a non-audio modality)."""
