"""The demo world: labelled synthetic scenes, their perturbations, and (with issue 4)
the small detectors and the inference server that stand in for a GPU YOLO container.
Not part of the sidecar; nothing here is downloaded."""
