"""Videos and animated images → NSFW scores over time (``nsfw-video-detection``).

Each module imports only those listed above it:

- ``errors``: `VideoError` and its codes.
- ``limits``: `VideoLimits`, the scan's wall-time `Deadline`, messages for a video over them.
- ``pyav``: WebM/Matroska, Ogg and MP4/QuickTime decoded by PyAV.
- ``animations``: animated GIF, PNG and WebP decoded by Pillow, the GIF's blocks checked first.
- ``containers``: the container sniffed from the magic bytes → its decoder, one `Video` protocol.
- ``sampling``: the sampling policy and scene cuts; `scan_video` hands over the frames to score.
- ``report``: frame scores → the answer (max, share flagged, segments).
- ``pipeline``: `score_video`, decoding in a thread ‖ chunked scoring, early exit.
- ``model``: the KServe model.
- ``cli``: ``python -m transformer.video.cli FILE``, the pipeline on ONNX Runtime in-process.
"""
