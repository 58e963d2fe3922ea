"""`lookout inject`, the mutating admission webhook and the shipped manifests."""
