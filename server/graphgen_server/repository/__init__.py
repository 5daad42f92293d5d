"""The model repository: Triton's layout on disk and each model's config.pbtxt, read and checked."""
