"""Conversion: the pure state-dict conversion, a checkpoint file into a folder and back, what a conversion did,
the source digest, the key inspection and the embedded demo."""
