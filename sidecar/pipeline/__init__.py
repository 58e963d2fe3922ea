"""The observation hand-off and the analysis of each exchange: the request image, the
response's detections, the KServe V2 codec."""
