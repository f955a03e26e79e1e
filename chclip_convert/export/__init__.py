"""ONNX export: a converted folder (or a checkpoint, converted first) into the ``onnx/`` files onnxruntime,
optimum and transformers.js load, each checked against the PyTorch model.

- ``graphs``: what each file computes, and its input and output names and dynamic axes;
- ``writer``: the files written, float32 from PyTorch, then the float16 and int8 variants;
- ``parity``: onnxruntime against PyTorch on the packaged photo and captions, with the tolerances;
- ``report``: what an export did, as text and JSON; ``card``: the README section on the files;
- ``pipeline``: :func:`export_onnx`, the steps in order, safe to interrupt;
- ``requirements``: the export extra's packages, checked without importing them.

Needs the ``export`` extra (onnx, onnxruntime, onnxscript); nothing here imports them at module level.
"""
