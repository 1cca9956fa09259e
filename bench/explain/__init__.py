"""The explain wing: attributions of a model's class scores (Captum's and ours), Grad-CAM,
TreeSHAP for tree teachers, and network dissection of a layer over a concept probe."""
