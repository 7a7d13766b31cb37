"""Data and evaluation: image loading and datasets (`datasets.py`), the standardizations
(`preprocessing.py`), the embedding pipeline behind `facenet embed` (`embed.py`) and LFW-style
pair evaluation (`lfw.py`)."""
