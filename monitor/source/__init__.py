"""Where a stream comes from: PyAV sources, decoded frames, which frames are sampled, reference pairing."""
