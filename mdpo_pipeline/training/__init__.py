"""Models and training: model presets and loading, the tiny ShapeWorld VLM and its supervised fine-tune."""
