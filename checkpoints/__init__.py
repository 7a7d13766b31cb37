"""Data package: the model registry (`registry.json`), the committed MTCNN weights (`mtcnn/`),
the regeneration manifest (`manifest.json`) and sample parity reports (`reports/`).

No code lives here: `models.hub.pretrained` reads these files through importlib.resources, so a
non-editable install finds them too. `tf/` (user-supplied TensorFlow sources) and the converted
Inception-ResNet-V1 files (~90-110 MB each) are not part of the package and are not committed.
"""
