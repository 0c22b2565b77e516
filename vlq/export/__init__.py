"""Vision-encoder export: a VLM's pixels -> LLM-embeddings path as ONNX / TensorRT, and running it.

Entry points: `exporter.export_vit` (vlq export-vit), `runtime.use_exported_vit` (a loaded VLM
takes its image embeddings from the export: vlq generate, vlq eval), `bench.bench_vit`
(vlq bench vit). Per-family steps live in one vision path per `VisionSpec.kind` (`llava.py`,
`qwen2_vl.py`, `features.py` for families whose own image-features method is exported as is and
Mini-Gemini, `navit.py` for BAGEL's packed SigLIP), found through `paths.vision_path`.
"""
