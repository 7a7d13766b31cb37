"""The `facenet` command (`facenet.py`; `python -m facenet_tf2pt.models.cli`) and the option checks
and exit-code discipline shared with `facenet-convert` (`options.py`)."""
