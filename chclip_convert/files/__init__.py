"""Reading and writing files: checkpoints (checked before they are read), converted folders, the atomic writer
with its per-output lock, safetensors shards and the assets a folder ships."""
